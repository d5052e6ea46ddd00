package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// TestAdminUsage checks the command lines admin refuses before touching the
// database: exit 2, naming the flag.
func TestAdminUsage(t *testing.T) {
	t.Parallel()
	var subs []string
	for _, s := range adminSubs() {
		subs = append(subs, "  "+s.path())
	}
	grant := []string{"admin", "owner", "grant", "--point", "P", "--email", "a@example.cl"}
	cases := []cliCase{
		{name: "help lists the subcommands", args: []string{"admin", "--help"}, code: 0, stderr: append([]string{"Usage: stackvps [--config FILE] admin"}, subs...)},
		{name: "subcommand help", args: []string{"admin", "token", "create", "--help"}, code: 0,
			stderr: []string{"Usage: stackvps [--config FILE] admin token create", "-ttl", "720h"}},
		{name: "no subcommand", args: []string{"admin"}, code: 2, stderr: []string{"want a subcommand: user, token, point, device, owner"}},
		{name: "unknown subcommand", args: []string{"admin", "frob"}, code: 2, stderr: []string{`unknown subcommand "frob"`}},
		{name: "no action", args: []string{"admin", "user"}, code: 2, stderr: []string{"user: want an action: create, list"}},
		{name: "unknown action", args: []string{"admin", "token", "steal"}, code: 2, stderr: []string{`unknown action "steal"`}},
		{name: "missing flag", args: []string{"admin", "user", "create", "--email", "a@example.cl"}, code: 2,
			stderr: []string{"admin: user create: --name is required"}},
		{name: "unknown flag", args: []string{"admin", "user", "create", "--email", "a@example.cl", "--name", "A", "--root"}, code: 2,
			stderr: []string{"-root"}},
		{name: "extra argument", args: []string{"admin", "user", "list", "all"}, code: 2, stderr: []string{`unexpected argument "all"`}},
		{name: "bad ttl", args: []string{"admin", "token", "create", "--email", "a@example.cl", "--name", "n", "--ttl", "soon"}, code: 2,
			stderr: []string{"-ttl"}},
		{name: "negative ttl", args: []string{"admin", "token", "create", "--email", "a@example.cl", "--name", "n", "--ttl", "-1h"}, code: 2,
			stderr: []string{"--ttl must not be negative"}},
		{name: "revoke without id", args: []string{"admin", "token", "revoke"}, code: 2, stderr: []string{"--id is required"}},
		{name: "revoke bad id", args: []string{"admin", "token", "revoke", "--id", "seven"}, code: 2, stderr: []string{"-id"}},
		{name: "bad kind", args: []string{"admin", "point", "create", "--code", "C", "--name", "N", "--kind", "lake"}, code: 2,
			stderr: []string{`--kind "lake"`}},
		{name: "bad timezone", args: []string{"admin", "point", "create", "--code", "C", "--name", "N", "--timezone", "Mars/Base"}, code: 2,
			stderr: []string{`--timezone "Mars/Base"`}},
		{name: "device without point", args: []string{"admin", "device", "add", "--id", "D"}, code: 2, stderr: []string{"--point is required"}},
		{name: "bad relation", args: append(grant, "--relation", "OWNER"), code: 2, stderr: []string{`--relation "OWNER"`}},
		{name: "bad permission", args: append(grant, "--relation", "SECONDARY", "--perms", "read,fly"), code: 2,
			stderr: []string{"--perms", `"fly"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

var tokenLine = regexp.MustCompile(`^svps_[0-9A-Za-z]{43}\n$`)

// TestAdminIntegration drives every admin subcommand against a fresh
// migrated schema, in process, and checks what they print, what they
// store and what they audit.
func TestAdminIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := testenv.Context(t, 2*time.Minute)
	pool, err := pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	environ := dbEnv(db)

	// Before migrating, admin says what to do.
	cliCase{name: "not migrated", args: []string{"admin", "user", "list"}, environ: environ, code: 1,
		stderr: []string{"not fully migrated", "stackvps migrate"}}.check(t)
	_, err = timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)

	run := func(c cliCase) {
		t.Helper()
		c.environ = environ
		c.check(t)
	}
	run(cliCase{args: []string{"admin", "user", "create", "--email", "root@example.cl", "--name", "Root", "--admin"}, code: 0,
		stdout: []string{"created user 1 root@example.cl (admin)"}})
	run(cliCase{args: []string{"admin", "user", "create", "--email", "ana@example.cl", "--name", "Ana Pérez"}, code: 0,
		stdout: []string{"created user 2 ana@example.cl (user)"}})
	run(cliCase{args: []string{"admin", "user", "create", "--email", "ANA@example.cl", "--name", "Dup"}, code: 1,
		stderr: []string{`admin user create: conflict: a user with email "ANA@example.cl" exists`}})
	run(cliCase{args: []string{"admin", "user", "create", "--email", "not-an-email", "--name", "X"}, code: 1,
		stderr: []string{"not-an-email"}})
	run(cliCase{args: []string{"admin", "user", "list"}, code: 0,
		stdout: []string{"ID", "EMAIL", "root@example.cl", "admin", "ana@example.cl", "Ana Pérez"}})

	run(cliCase{args: []string{"admin", "point", "create", "--code", "P-1", "--name", "Pozo 1"}, code: 0,
		stdout: []string{`created point P-1 "Pozo 1" (well, America/Santiago)`}})
	run(cliCase{args: []string{"admin", "point", "create", "--code", "P-1", "--name", "Again", "--kind", "surface"}, code: 1,
		stderr: []string{`point "P-1" already exists`}})
	run(cliCase{args: []string{"admin", "device", "add", "--id", "D-1", "--point", "P-1", "--provider", "generic-json"}, code: 0,
		stdout: []string{"added device D-1 to point P-1 (provider generic-json)"}})
	run(cliCase{args: []string{"admin", "device", "add", "--id", "D-2", "--point", "NOPE"}, code: 1,
		stderr: []string{`admin device add: point "NOPE" not found`}})
	run(cliCase{args: []string{"admin", "device", "add", "--id", "D-1", "--point", "P-1"}, code: 1,
		stderr: []string{`device "D-1" already exists`}})

	run(cliCase{args: []string{"admin", "owner", "grant", "--point", "P-1", "--email", "Ana@Example.cl", "--relation", "administrator"}, code: 0,
		stdout: []string{"granted point P-1 to ana@example.cl as ADMINISTRATOR: read,write,manage_devices,manage_compliance,manage_notifications"}})
	run(cliCase{args: []string{"admin", "owner", "grant", "--point", "P-1", "--email", "ana@example.cl", "--relation", "SECONDARY"}, code: 1,
		stderr: []string{"already has a relation to point"}})
	run(cliCase{args: []string{"admin", "owner", "grant", "--point", "P-1", "--email", "nobody@example.cl", "--relation", "SECONDARY"}, code: 1,
		stderr: []string{`user "nobody@example.cl" not found`}})
	run(cliCase{args: []string{"admin", "owner", "grant", "--point", "NOPE", "--email", "root@example.cl", "--relation", "PRIMARY", "--perms", "write"}, code: 1,
		stderr: []string{`point "NOPE" not found`}})
	run(cliCase{args: []string{"admin", "owner", "grant", "--point", "P-1", "--email", "root@example.cl", "--relation", "SECONDARY", "--perms", "manage_compliance"}, code: 0,
		stdout: []string{"as SECONDARY: read,manage_compliance"}})
	run(cliCase{args: []string{"admin", "owner", "list", "--point", "P-1"}, code: 0,
		stdout: []string{"RELATION", "ana@example.cl", "ADMINISTRATOR", "root@example.cl", "SECONDARY", "read,manage_compliance"}})
	run(cliCase{args: []string{"admin", "owner", "list", "--point", "NOPE"}, code: 1, stderr: []string{`point "NOPE" not found`}})

	// The token is printed once, alone on stdout; the warning goes to stderr.
	code, stdout, stderr := runInProcess(t, environ, "admin", "token", "create", "--email", "ana@example.cl", "--name", "laptop", "--ttl", "1h")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Regexp(t, tokenLine, stdout)
	token := strings.TrimSpace(stdout)
	require.Contains(t, stderr, "cannot be shown again")
	require.NotContains(t, stderr, token)
	store := accounts.New(pool)
	p, err := store.Authenticate(ctx, token)
	require.NoError(t, err)
	require.Equal(t, "ana@example.cl", p.Email())
	require.NoError(t, store.Can(ctx, p, "P-1", accounts.PermManageDevices))
	tokenID := p.TokenID()

	run(cliCase{args: []string{"admin", "token", "create", "--email", "nobody@example.cl", "--name", "x"}, code: 1,
		stderr: []string{`user "nobody@example.cl" not found`}})
	run(cliCase{args: []string{"admin", "token", "list", "--email", "ana@example.cl"}, code: 0,
		stdout: []string{"laptop", token[:13] + "…", "active"}, never: []string{token}})
	run(cliCase{args: []string{"admin", "token", "revoke", "--id", fmt.Sprint(tokenID)}, code: 0,
		stdout: []string{fmt.Sprintf("revoked token %d (%s…) of user 2", tokenID, token[:13])}})
	run(cliCase{args: []string{"admin", "token", "revoke", "--id", fmt.Sprint(tokenID)}, code: 0,
		stdout: []string{fmt.Sprintf("token %d (%s…) was already revoked", tokenID, token[:13])}})
	run(cliCase{args: []string{"admin", "token", "revoke", "--id", "9999"}, code: 1, stderr: []string{"token 9999 not found"}})
	run(cliCase{args: []string{"admin", "token", "list", "--email", "ana@example.cl"}, code: 0, stdout: []string{"revoked"}})
	_, err = store.Authenticate(ctx, token)
	require.ErrorIs(t, err, accounts.ErrUnauthenticated)

	run(cliCase{args: []string{"admin", "owner", "revoke", "--point", "P-1", "--email", "ana@example.cl"}, code: 0,
		stdout: []string{"revoked point P-1 from ana@example.cl"}})
	run(cliCase{args: []string{"admin", "owner", "revoke", "--point", "P-1", "--email", "ana@example.cl"}, code: 1,
		stderr: []string{"has no relation to point"}})

	// Every successful change, and nothing else, is in the audit log, by
	// the command line.
	evs, err := audit.List(context.Background(), pool, audit.Filter{Limit: 1000})
	require.NoError(t, err)
	var actions []string
	for i := len(evs) - 1; i >= 0; i-- {
		ev := evs[i]
		actions = append(actions, ev.Action)
		require.Zero(t, ev.ActorUserID)
		require.True(t, strings.HasPrefix(ev.Actor, "cli:") && len(ev.Actor) > 4, ev.Actor)
	}
	require.Equal(t, []string{"user.create", "user.create", "point.create", "device.create", "owner.grant", "owner.grant",
		"token.create", "token.revoke", "owner.revoke"}, actions)
}
