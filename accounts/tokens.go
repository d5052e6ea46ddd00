package accounts

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
)

// TokenPrefix starts every API token, so leaked tokens are recognizable
// (secret scanners, logs).
const TokenPrefix = "svps_"

const (
	tokenBytes     = 32
	tokenSecretLen = 43 // base62 digits of 32 bytes: 62^43 > 2^256
	tokenIDLen     = 8  // characters of the secret kept as the prefix column
	base62         = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Token is an API token as stored: never the token itself.
type Token struct {
	ID     int64
	UserID int64
	Name   string
	// Prefix is the first 8 characters after "svps_": it identifies the
	// token in listings (Display) without giving it away.
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	ExpiresAt  *time.Time // nil: never expires
	RevokedAt  *time.Time
}

// Display is how listings show the token: "svps_AbCd1234…".
func (t Token) Display() string { return TokenPrefix + t.Prefix + "…" }

// State is "revoked", "expired" or "active" at now.
func (t Token) State(now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return "revoked"
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return "expired"
	}
	return "active"
}

// tokenJSON is a token's state in the audit log: no hash, no secret.
type tokenJSON struct {
	ID        int64      `json:"id"`
	UserID    int64      `json:"user_id"`
	Name      string     `json:"name"`
	Prefix    string     `json:"prefix"`
	ExpiresAt *time.Time `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func (t Token) audit() tokenJSON {
	return tokenJSON{ID: t.ID, UserID: t.UserID, Name: t.Name, Prefix: t.Prefix, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt}
}

const tokenColumns = `id, user_id, name, prefix, created_at, last_used_at, expires_at, revoked_at`

func scanToken(r pgx.Row) (Token, error) {
	var t Token
	err := r.Scan(&t.ID, &t.UserID, &t.Name, &t.Prefix, &t.CreatedAt, &t.LastUsedAt, &t.ExpiresAt, &t.RevokedAt)
	return t, err
}

// newSecret returns a fresh token and its secret part.
func newSecret(r io.Reader) (string, error) {
	var b [tokenBytes]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	n := new(big.Int).SetBytes(b[:])
	sixtyTwo := big.NewInt(62)
	digit := new(big.Int)
	out := make([]byte, tokenSecretLen)
	for i := tokenSecretLen - 1; i >= 0; i-- {
		n.DivMod(n, sixtyTwo, digit)
		out[i] = base62[digit.Int64()]
	}
	return string(out), nil
}

// splitToken returns the secret part of a well-formed token.
func splitToken(token string) (string, bool) {
	secret, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok || len(secret) != tokenSecretLen {
		return "", false
	}
	for i := range len(secret) {
		if strings.IndexByte(base62, secret[i]) < 0 {
			return "", false
		}
	}
	return secret, true
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// ParseAuthorization returns the token of an "Authorization: Token <key>"
// header value (the scheme in any case), or ErrUnauthenticated.
func ParseAuthorization(header string) (string, error) {
	scheme, key, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Token") || strings.TrimSpace(key) == "" {
		return "", fmt.Errorf("%w: want the header Authorization: Token <key>", ErrUnauthenticated)
	}
	return strings.TrimSpace(key), nil
}

// CreateToken creates a token for the user named name, valid for ttl (0:
// until revoked), and returns it. The token is returned only here: the
// database keeps its SHA-256. Administrators create tokens for anyone, users
// for themselves (anyone else: ErrNotFound).
func (s *Store) CreateToken(ctx context.Context, actor Principal, userID int64, name string, ttl time.Duration) (string, Token, error) {
	var plaintext string
	var tok Token
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		if !actor.IsAdmin() && !actor.is(userID) {
			return nil, fmt.Errorf("user %d %w", userID, ErrNotFound)
		}
		name = strings.TrimSpace(name)
		if name == "" || len(name) > 100 || strings.ContainsFunc(name, isControl) {
			return nil, fmt.Errorf("%w: token name must be 1-100 printable characters", ErrInvalid)
		}
		if ttl < 0 {
			return nil, fmt.Errorf("%w: token lifetime %s is negative", ErrInvalid, ttl)
		}
		if _, err := getUser(ctx, tx, userID, "FOR KEY SHARE"); err != nil {
			return nil, err
		}
		secret, err := newSecret(s.rand)
		if err != nil {
			return nil, err
		}
		plaintext = TokenPrefix + secret
		now := s.now()
		var expires *time.Time
		if ttl > 0 {
			expires = new(now.Add(ttl))
		}
		tok, err = scanToken(tx.QueryRow(ctx, `INSERT INTO api_tokens (user_id, name, prefix, hash, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+tokenColumns,
			userID, name, secret[:tokenIDLen], hashToken(plaintext), now, expires))
		if err != nil {
			return nil, fmt.Errorf("creating token for user %d: %w", userID, err)
		}
		return &audit.Entry{Action: "token.create", EntityType: "token", EntityID: strconv.FormatInt(tok.ID, 10), After: tok.audit()}, nil
	})
	if err != nil {
		return "", Token{}, err
	}
	return plaintext, tok, nil
}

// Tokens returns the user's tokens, newest first, revoked and expired ones
// included. Administrators see anyone's, users their own.
func (s *Store) Tokens(ctx context.Context, actor Principal, userID int64) ([]Token, error) {
	if err := actor.check(); err != nil {
		return nil, err
	}
	if !actor.IsAdmin() && !actor.is(userID) {
		return nil, fmt.Errorf("user %d %w", userID, ErrNotFound)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE user_id = $1 ORDER BY id DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("reading tokens of user %d: %w", userID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("reading tokens of user %d: %w", userID, err)
	}
	return out, nil
}

// RevokeToken revokes the token with id and returns it. Administrators
// revoke any token, users their own (anyone else's: ErrNotFound). Revoking
// a revoked token changes nothing and records nothing.
func (s *Store) RevokeToken(ctx context.Context, actor Principal, id int64) (Token, error) {
	var tok Token
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		var err error
		tok, err = scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !actor.IsAdmin() && !actor.is(tok.UserID)) {
			tok = Token{}
			return nil, fmt.Errorf("token %d %w", id, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("reading token %d: %w", id, err)
		}
		if tok.RevokedAt != nil {
			return nil, nil
		}
		before := tok.audit()
		tok.RevokedAt = new(s.now())
		if _, err := tx.Exec(ctx, `UPDATE api_tokens SET revoked_at = $2 WHERE id = $1`, id, tok.RevokedAt); err != nil {
			return nil, fmt.Errorf("revoking token %d: %w", id, err)
		}
		return &audit.Entry{Action: "token.revoke", EntityType: "token", EntityID: strconv.FormatInt(id, 10),
			Before: before, After: tok.audit()}, nil
	})
	return tok, err
}

// Authenticate returns the principal of the user whose token this is. A
// malformed, unknown, revoked or expired token, or one of an inactive user,
// is ErrUnauthenticated (the wrapped text says which, for logs; tell the
// client no more than 401). The candidate rows are found by the token's
// non-secret prefix and compared by hash in constant time. last_used_at is
// written at most once per touch interval (default a minute).
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	secret, ok := splitToken(token)
	if !ok {
		return Principal{}, fmt.Errorf("%w: malformed token", ErrUnauthenticated)
	}
	hash := hashToken(token)
	rows, err := s.pool.Query(ctx, `SELECT t.id, t.hash, t.last_used_at, t.expires_at, t.revoked_at,
			u.id, u.email, u.name, u.role, u.active, u.created_at, u.updated_at
		FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.prefix = $1`, secret[:tokenIDLen])
	if err != nil {
		return Principal{}, fmt.Errorf("looking up token: %w", err)
	}
	type candidate struct {
		id                         int64
		hash                       []byte
		lastUsed, expires, revoked *time.Time
		user                       User
	}
	cands, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
		var c candidate
		u := &c.user
		err := r.Scan(&c.id, &c.hash, &c.lastUsed, &c.expires, &c.revoked,
			&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.CreatedAt, &u.UpdatedAt)
		return c, err
	})
	if err != nil {
		return Principal{}, fmt.Errorf("looking up token: %w", err)
	}
	var match *candidate
	for i := range cands {
		if subtle.ConstantTimeCompare(cands[i].hash, hash) == 1 {
			match = &cands[i]
		}
	}
	now := s.now()
	switch {
	case match == nil:
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	case match.revoked != nil:
		return Principal{}, fmt.Errorf("%w: token %d is revoked", ErrUnauthenticated, match.id)
	case match.expires != nil && !now.Before(*match.expires):
		return Principal{}, fmt.Errorf("%w: token %d expired", ErrUnauthenticated, match.id)
	case !match.user.Active:
		return Principal{}, fmt.Errorf("%w: user %d is inactive", ErrUnauthenticated, match.user.ID)
	}
	if match.lastUsed == nil || now.Sub(*match.lastUsed) >= s.touch {
		// Conditional, so concurrent requests write it once; not audited:
		// it is bookkeeping, not a change anyone made.
		_, err := s.pool.Exec(ctx, `UPDATE api_tokens SET last_used_at = $2
			WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)`, match.id, now, now.Add(-s.touch))
		if err != nil {
			return Principal{}, fmt.Errorf("recording use of token %d: %w", match.id, err)
		}
	}
	return userPrincipal(match.user, match.id), nil
}
