package accounts_test

import (
	"crypto/sha256"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
)

var tokenFormat = regexp.MustCompile(`^svps_[0-9A-Za-z]{43}$`)

func TestParseAuthorization(t *testing.T) {
	cases := []struct {
		name, header, want string
		ok                 bool
	}{
		{"token", "Token svps_abc", "svps_abc", true},
		{"scheme in any case", "token  svps_abc ", "svps_abc", true},
		{"bearer", "Bearer svps_abc", "", false},
		{"no key", "Token ", "", false},
		{"empty", "", "", false},
		{"key alone", "svps_abc", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := accounts.ParseAuthorization(c.header)
			if !c.ok {
				require.ErrorIs(t, err, accounts.ErrUnauthenticated)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestTokenLifecycleIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ana := f.user("ana@example.cl", accounts.RoleUser)
	bob := f.user("bob@example.cl", accounts.RoleUser)

	plain, tok, err := f.store.CreateToken(f.ctx, root, ana.ID, "laptop", time.Hour)
	require.NoError(t, err)
	require.Regexp(t, tokenFormat, plain)
	require.Equal(t, plain[5:13], tok.Prefix)
	require.Equal(t, "svps_"+tok.Prefix+"…", tok.Display())
	require.NotNil(t, tok.ExpiresAt)
	require.WithinDuration(t, f.clock.Now().Add(time.Hour), *tok.ExpiresAt, time.Millisecond)

	t.Run("the token is never stored", func(t *testing.T) {
		secret := strings.TrimPrefix(plain, "svps_")
		tables, err := f.pool.Query(f.ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
		require.NoError(t, err)
		names, err := pgx.CollectRows(tables, pgx.RowTo[string])
		require.NoError(t, err)
		require.Contains(t, names, "api_tokens")
		require.Contains(t, names, "audit_log")
		for _, table := range names {
			var n int
			// Every column of every row, as text (bytea as hex).
			require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+` r
				WHERE strpos(r::text, $1) > 0`, secret).Scan(&n))
			require.Zero(t, n, "table %s holds the token", table)
		}
		var hash []byte
		require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT hash FROM api_tokens WHERE id = $1`, tok.ID).Scan(&hash))
		sum := sha256.Sum256([]byte(plain))
		require.Equal(t, sum[:], hash, "the hash is the SHA-256 of the whole token")
	})

	t.Run("authenticates and touches last_used_at at most once a minute", func(t *testing.T) {
		p, err := f.store.Authenticate(f.ctx, plain)
		require.NoError(t, err)
		require.Equal(t, ana.ID, p.UserID())
		require.Equal(t, "ana@example.cl", p.Email())
		require.Equal(t, tok.ID, p.TokenID())
		require.Equal(t, "user:ana@example.cl", p.Actor())
		require.False(t, p.IsAdmin())
		first := f.clock.Now()
		lastUsed := func() time.Time {
			var at time.Time
			require.NoError(t, f.pool.QueryRow(f.ctx, `SELECT last_used_at FROM api_tokens WHERE id = $1`, tok.ID).Scan(&at))
			return at
		}
		require.WithinDuration(t, first, lastUsed(), time.Millisecond)
		f.clock.Add(30 * time.Second)
		_, err = f.store.Authenticate(f.ctx, plain)
		require.NoError(t, err)
		require.WithinDuration(t, first, lastUsed(), time.Millisecond, "not rewritten within the minute")
		f.clock.Add(31 * time.Second)
		_, err = f.store.Authenticate(f.ctx, plain)
		require.NoError(t, err)
		require.WithinDuration(t, f.clock.Now(), lastUsed(), time.Millisecond, "rewritten after a minute")
	})

	t.Run("bad tokens", func(t *testing.T) {
		other := "svps_" + strings.Repeat("A", 43)
		for _, bad := range []string{"", "svps_", plain[:len(plain)-1], plain + "x", "Token " + plain,
			strings.Replace(plain, "svps_", "sk_", 1), plain[:len(plain)-1] + "!", other,
			// Same prefix, another secret: found by prefix, refused by hash.
			plain[:13] + strings.Repeat("z", 35)} {
			_, err := f.store.Authenticate(f.ctx, bad)
			require.ErrorIs(t, err, accounts.ErrUnauthenticated, "%q", bad)
		}
	})

	t.Run("another user cannot see or revoke it", func(t *testing.T) {
		pb := f.login(bob)
		_, err := f.store.Tokens(f.ctx, pb, ana.ID)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, err = f.store.RevokeToken(f.ctx, pb, tok.ID)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, _, err = f.store.CreateToken(f.ctx, pb, ana.ID, "sneaky", 0)
		require.ErrorIs(t, err, accounts.ErrNotFound)
		_, err = f.store.Authenticate(f.ctx, plain)
		require.NoError(t, err)
	})

	t.Run("users manage their own tokens", func(t *testing.T) {
		pa := f.login(ana)
		own, _, err := f.store.CreateToken(f.ctx, pa, ana.ID, "script", 0)
		require.NoError(t, err)
		list, err := f.store.Tokens(f.ctx, pa, ana.ID)
		require.NoError(t, err)
		require.Len(t, list, 3) // laptop, login's "test", script
		p, err := f.store.Authenticate(f.ctx, own)
		require.NoError(t, err)
		_, err = f.store.RevokeToken(f.ctx, pa, p.TokenID())
		require.NoError(t, err)
		_, err = f.store.Authenticate(f.ctx, own)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated)
	})

	t.Run("revoked", func(t *testing.T) {
		n := f.auditRows()
		got, err := f.store.RevokeToken(f.ctx, root, tok.ID)
		require.NoError(t, err)
		require.NotNil(t, got.RevokedAt)
		require.Equal(t, "revoked", got.State(f.clock.Now()))
		_, err = f.store.Authenticate(f.ctx, plain)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated)
		require.ErrorContains(t, err, "revoked")
		_, err = f.store.RevokeToken(f.ctx, root, tok.ID)
		require.NoError(t, err, "revoking twice is fine")
		require.Equal(t, n+1, f.auditRows(), "and changes nothing the second time")
		_, err = f.store.RevokeToken(f.ctx, root, 999999)
		require.ErrorIs(t, err, accounts.ErrNotFound)
	})

	t.Run("expired", func(t *testing.T) {
		short, st, err := f.store.CreateToken(f.ctx, root, ana.ID, "short", 10*time.Minute)
		require.NoError(t, err)
		never, nt, err := f.store.CreateToken(f.ctx, root, ana.ID, "forever", 0)
		require.NoError(t, err)
		require.Nil(t, nt.ExpiresAt)
		f.clock.Add(10*time.Minute - time.Second)
		_, err = f.store.Authenticate(f.ctx, short)
		require.NoError(t, err)
		f.clock.Add(time.Second)
		_, err = f.store.Authenticate(f.ctx, short)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated)
		require.ErrorContains(t, err, "expired")
		require.Equal(t, "expired", st.State(f.clock.Now()))
		f.clock.Add(24 * 365 * time.Hour)
		_, err = f.store.Authenticate(f.ctx, never)
		require.NoError(t, err)
		_, _, err = f.store.CreateToken(f.ctx, root, ana.ID, "negative", -time.Second)
		require.ErrorIs(t, err, accounts.ErrInvalid)
	})

	t.Run("inactive user", func(t *testing.T) {
		plain, _, err := f.store.CreateToken(f.ctx, root, bob.ID, "bob", 0)
		require.NoError(t, err)
		_, err = f.store.UpdateUser(f.ctx, root, bob.ID, accounts.UserChanges{Active: new(false)})
		require.NoError(t, err)
		_, err = f.store.Authenticate(f.ctx, plain)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated)
		require.ErrorContains(t, err, "inactive")
		_, err = f.store.UpdateUser(f.ctx, root, bob.ID, accounts.UserChanges{Active: new(true)})
		require.NoError(t, err)
		_, err = f.store.Authenticate(f.ctx, plain)
		require.NoError(t, err)
	})

	t.Run("deleting the user deletes the tokens", func(t *testing.T) {
		plain, _, err := f.store.CreateToken(f.ctx, root, bob.ID, "bob2", 0)
		require.NoError(t, err)
		require.NoError(t, f.store.DeleteUser(f.ctx, root, bob.ID))
		_, err = f.store.Authenticate(f.ctx, plain)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated)
	})
}

func TestZeroPrincipalIsRefusedIntegration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.point("P1")
	var nobody accounts.Principal
	_, err := f.store.VisiblePoints(f.ctx, nobody)
	require.ErrorIs(t, err, accounts.ErrUnauthenticated)
	require.ErrorIs(t, f.store.Can(f.ctx, nobody, "P1", accounts.PermRead), accounts.ErrUnauthenticated)
	_, err = f.store.CreateUser(f.ctx, nobody, accounts.NewUser{Email: "x@example.cl"})
	require.ErrorIs(t, err, accounts.ErrUnauthenticated)
	_, err = f.store.Points(f.ctx, nobody)
	require.ErrorIs(t, err, accounts.ErrUnauthenticated)
	require.Equal(t, 1, f.auditRows(), "only the setup's point.create")
}
