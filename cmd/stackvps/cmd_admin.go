package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	osuser "os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// adminSub is one `stackvps admin GROUP ACTION` subcommand.
type adminSub struct {
	group, action string
	synopsis      string // its flags, for the listing
	summary       string
	// setup declares the flags on fs and returns check, which validates
	// them after parsing (a usage error: exit 2), and run.
	setup func(fs *flag.FlagSet) (check func() error, run func(ctx context.Context, a *adminEnv) error)
}

func (s *adminSub) path() string { return s.group + " " + s.action }

// adminEnv is what a subcommand runs with. The command line acts as the
// system principal "cli:<os user>": an administrator, recorded as such in
// the audit log.
type adminEnv struct {
	stdout, stderr io.Writer
	store          *accounts.Store
	actor          accounts.Principal
	// pool, cfg, environ and stdin serve the subcommands beyond accounts
	// (compliance): its store, its credentials key, a password read from
	// the environment or standard input.
	pool    *pgxpool.Pool
	cfg     *config.Config
	environ []string
	stdin   io.Reader
}

func adminSubs() []*adminSub {
	return append([]*adminSub{
		{group: "user", action: "create", synopsis: "--email E --name N [--admin]", summary: "create a user (--admin: an administrator)", setup: adminUserCreate},
		{group: "user", action: "list", summary: "list users", setup: adminUserList},
		{group: "token", action: "create", synopsis: "--email E --name N [--ttl 720h]", summary: "create an API token for a user; it is printed once", setup: adminTokenCreate},
		{group: "token", action: "list", synopsis: "--email E", summary: "list a user's tokens (never the tokens themselves)", setup: adminTokenList},
		{group: "token", action: "revoke", synopsis: "--id ID", summary: "revoke a token", setup: adminTokenRevoke},
		{group: "point", action: "create", synopsis: "--code C --name N [--kind well|surface|other] [--timezone Z]", summary: "create a catchment point", setup: adminPointCreate},
		{group: "device", action: "add", synopsis: "--id D --point C [--provider P]", summary: "add a device reporting for a point", setup: adminDeviceAdd},
		{group: "owner", action: "grant", synopsis: "--point C --email E --relation PRIMARY|SECONDARY|ADMINISTRATOR [--perms read,write,...]", summary: "relate a user to a point (permissions default to the relation's)", setup: adminOwnerGrant},
		{group: "owner", action: "revoke", synopsis: "--point C --email E", summary: "remove a user's relation to a point", setup: adminOwnerRevoke},
		{group: "owner", action: "list", synopsis: "--point C", summary: "list a point's users and their permissions", setup: adminOwnerList},
	}, adminComplianceSubs()...)
}

func adminUsage() string {
	var b strings.Builder
	b.WriteString("GROUP ACTION [flags]\n\nSubcommands:\n")
	for _, s := range adminSubs() {
		fmt.Fprintf(&b, "%s\n%16s%s\n", strings.TrimRight(fmt.Sprintf("  %-13s %s", s.path(), s.synopsis), " "), "", s.summary)
	}
	b.WriteString("\nRun `stackvps admin GROUP ACTION --help` for a subcommand's flags. The command line acts as\n")
	b.WriteString("the administrator \"cli:<os user>\" in the audit log.")
	return b.String()
}

func adminCommand() *command {
	return &command{
		name:    "admin",
		summary: "manage users, API tokens, points, devices, owners and compliance configs (stackvps admin --help)",
		usage:   adminUsage(),
		args: func(args []string) error {
			_, _, err := parseAdmin(args, io.Discard)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		},
		setup: func(*flag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				sub, run, err := parseAdmin(args, e.stderr)
				if errors.Is(err, flag.ErrHelp) {
					return nil
				}
				if err != nil {
					return &usageError{"admin: " + err.Error()}
				}
				cfg, err := loadConfig(e)
				if err != nil {
					return err
				}
				pool, err := timescale.Connect(ctx, cfg.Database)
				if err != nil {
					return err
				}
				defer pool.Close()
				if err := timescale.CheckMigrated(ctx, pool); err != nil {
					return err
				}
				a := &adminEnv{stdout: e.stdout, stderr: e.stderr, store: accounts.New(pool), actor: accounts.System(cliActor(e)),
					pool: pool, cfg: cfg, environ: e.environ, stdin: os.Stdin}
				if err := run(ctx, a); err != nil {
					return fmt.Errorf("admin %s: %w", sub.path(), err)
				}
				return nil
			}
		},
	}
}

// cliActor names the person at the keyboard for the audit log.
func cliActor(e *env) string {
	name := ""
	if u, err := osuser.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = lookupEnv(e.environ, "USER")
	}
	if name == "" {
		name = "unknown"
	}
	return "cli:" + name
}

// parseAdmin finds the subcommand named by args and parses its flags,
// writing flag errors and --help to out.
func parseAdmin(args []string, out io.Writer) (*adminSub, func(context.Context, *adminEnv) error, error) {
	subs := adminSubs()
	groups := []string{}
	for _, s := range subs {
		if len(groups) == 0 || groups[len(groups)-1] != s.group {
			groups = append(groups, s.group)
		}
	}
	if len(args) == 0 {
		return nil, nil, fmt.Errorf("want a subcommand: %s (stackvps admin --help lists them)", strings.Join(groups, ", "))
	}
	var actions []string
	for _, s := range subs {
		if s.group == args[0] {
			actions = append(actions, s.action)
		}
	}
	if actions == nil {
		return nil, nil, fmt.Errorf("unknown subcommand %q; want one of %s", args[0], strings.Join(groups, ", "))
	}
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		return nil, nil, fmt.Errorf("%s: want an action: %s", args[0], strings.Join(actions, ", "))
	}
	var sub *adminSub
	for _, s := range subs {
		if s.group == args[0] && s.action == args[1] {
			sub = s
		}
	}
	if sub == nil {
		return nil, nil, fmt.Errorf("%s: unknown action %q; want %s", args[0], args[1], strings.Join(actions, ", "))
	}
	fs := flag.NewFlagSet("stackvps admin "+sub.path(), flag.ContinueOnError)
	fs.SetOutput(out)
	check, run := sub.setup(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stackvps [--config FILE] admin %s %s\n\n%s\n", sub.path(), sub.synopsis, sub.summary)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	if err := fs.Parse(args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return sub, nil, err
		}
		return nil, nil, fmt.Errorf("%s: %w", sub.path(), err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("%s: unexpected argument %q", sub.path(), fs.Arg(0))
	}
	if err := check(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", sub.path(), err)
	}
	return sub, run, nil
}

// need returns an error naming the flag when v is empty.
func need(flags ...[2]string) error {
	for _, f := range flags {
		if strings.TrimSpace(f[1]) == "" {
			return fmt.Errorf("--%s is required", f[0])
		}
	}
	return nil
}

func adminUserCreate(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	email := fs.String("email", "", "the user's email (unique, in any case)")
	name := fs.String("name", "", "the user's name")
	admin := fs.Bool("admin", false, "make the user an administrator (sees and changes everything)")
	check := func() error { return need([2]string{"email", *email}, [2]string{"name", *name}) }
	return check, func(ctx context.Context, a *adminEnv) error {
		role := accounts.RoleUser
		if *admin {
			role = accounts.RoleAdmin
		}
		u, err := a.store.CreateUser(ctx, a.actor, accounts.NewUser{Email: *email, Name: *name, Role: role})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "created user %d %s (%s)\n", u.ID, u.Email, u.Role)
		return nil
	}
}

func adminUserList(*flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	return func() error { return nil }, func(ctx context.Context, a *adminEnv) error {
		users, err := a.store.Users(ctx, a.actor)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEMAIL\tNAME\tROLE\tACTIVE\tCREATED")
		for _, u := range users {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%t\t%s\n", u.ID, u.Email, orDash(u.Name), u.Role, u.Active, u.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
}

func adminTokenCreate(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	email := fs.String("email", "", "the token's user")
	name := fs.String("name", "", "what the token is for, e.g. laptop or grafana")
	ttl := fs.Duration("ttl", 720*time.Hour, "lifetime (0: until revoked)")
	check := func() error {
		if *ttl < 0 {
			return errors.New("--ttl must not be negative")
		}
		return need([2]string{"email", *email}, [2]string{"name", *name})
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		u, err := a.store.UserByEmail(ctx, a.actor, *email)
		if err != nil {
			return err
		}
		plain, tok, err := a.store.CreateToken(ctx, a.actor, u.ID, *name, *ttl)
		if err != nil {
			return err
		}
		expires := "never expires"
		if tok.ExpiresAt != nil {
			expires = "expires " + tok.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(a.stderr, "created token %d %q for %s (%s). It is shown once, below, and cannot be shown again: store it now.\n",
			tok.ID, tok.Name, u.Email, expires)
		fmt.Fprintln(a.stdout, plain)
		return nil
	}
}

func adminTokenList(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	email := fs.String("email", "", "the tokens' user")
	check := func() error { return need([2]string{"email", *email}) }
	return check, func(ctx context.Context, a *adminEnv) error {
		u, err := a.store.UserByEmail(ctx, a.actor, *email)
		if err != nil {
			return err
		}
		toks, err := a.store.Tokens(ctx, a.actor, u.ID)
		if err != nil {
			return err
		}
		now := time.Now()
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tTOKEN\tSTATE\tCREATED\tLAST USED\tEXPIRES")
		for _, t := range toks {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Display(), t.State(now),
				t.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(t.LastUsedAt), timeOrDash(t.ExpiresAt))
		}
		return tw.Flush()
	}
}

func adminTokenRevoke(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	id := fs.Int64("id", 0, "the token's id (stackvps admin token list shows it)")
	check := func() error {
		if *id <= 0 {
			return errors.New("--id is required (a positive token id)")
		}
		return nil
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		before := time.Now()
		tok, err := a.store.RevokeToken(ctx, a.actor, *id)
		if err != nil {
			return err
		}
		if tok.RevokedAt != nil && tok.RevokedAt.Before(before) {
			fmt.Fprintf(a.stdout, "token %d (%s) was already revoked at %s\n", tok.ID, tok.Display(), tok.RevokedAt.UTC().Format(time.RFC3339))
			return nil
		}
		fmt.Fprintf(a.stdout, "revoked token %d (%s) of user %d\n", tok.ID, tok.Display(), tok.UserID)
		return nil
	}
}

func adminPointCreate(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	code := fs.String("code", "", "the point's code, as readings and topics name it")
	name := fs.String("name", "", "the point's name")
	kind := fs.String("kind", "well", "well, surface or other")
	tz := fs.String("timezone", "America/Santiago", "IANA time zone of the point's local days")
	check := func() error {
		if err := need([2]string{"code", *code}, [2]string{"name", *name}); err != nil {
			return err
		}
		switch *kind {
		case "well", "surface", "other":
		default:
			return fmt.Errorf("--kind %q: want well, surface or other", *kind)
		}
		if _, err := time.LoadLocation(*tz); err != nil || *tz == "" || *tz == "Local" {
			return fmt.Errorf("--timezone %q: want an IANA zone such as America/Santiago", *tz)
		}
		return nil
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		p, err := a.store.CreatePoint(ctx, a.actor, points.Point{Code: *code, Name: *name, Kind: *kind, Timezone: *tz, Active: true})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "created point %s %q (%s, %s)\n", p.Code, p.Name, p.Kind, p.Timezone)
		return nil
	}
}

func adminDeviceAdd(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	id := fs.String("id", "", "the device's id, as its MQTT topics name it")
	point := fs.String("point", "", "the code of the point it reports for")
	provider := fs.String("provider", "", "the provider (payload format) it speaks, if known")
	check := func() error { return need([2]string{"id", *id}, [2]string{"point", *point}) }
	return check, func(ctx context.Context, a *adminEnv) error {
		d, err := a.store.AddDevice(ctx, a.actor, points.Device{ID: *id, Point: *point, Provider: *provider, Active: true})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "added device %s to point %s (provider %s)\n", d.ID, d.Point, orDash(d.Provider))
		return nil
	}
}

func adminOwnerGrant(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "the point's code")
	email := fs.String("email", "", "the user's email")
	relation := fs.String("relation", "", "PRIMARY, SECONDARY or ADMINISTRATOR")
	permsFlag := fs.String("perms", "", "comma-separated permissions (read is always included): "+
		strings.Join(permissionNames(), ", ")+"; default: the relation's")
	var rel accounts.Relation
	var perms []accounts.Permission
	check := func() error {
		if err := need([2]string{"point", *point}, [2]string{"email", *email}, [2]string{"relation", *relation}); err != nil {
			return err
		}
		var err error
		if rel, err = accounts.ParseRelation(*relation); err != nil {
			return fmt.Errorf("--relation %q: want PRIMARY, SECONDARY or ADMINISTRATOR", *relation)
		}
		if *permsFlag != "" {
			if perms, err = accounts.ParsePermissions(*permsFlag); err != nil {
				return fmt.Errorf("--perms: %w", err)
			}
		}
		return nil
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		u, err := a.store.UserByEmail(ctx, a.actor, *email)
		if err != nil {
			return err
		}
		o, err := a.store.Grant(ctx, a.actor, *point, u.ID, rel, perms)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "granted point %s to %s as %s: %s\n", o.Point, o.Email, o.Relation, joinPerms(o.Permissions))
		return nil
	}
}

func adminOwnerRevoke(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "the point's code")
	email := fs.String("email", "", "the user's email")
	check := func() error { return need([2]string{"point", *point}, [2]string{"email", *email}) }
	return check, func(ctx context.Context, a *adminEnv) error {
		u, err := a.store.UserByEmail(ctx, a.actor, *email)
		if err != nil {
			return err
		}
		if err := a.store.Revoke(ctx, a.actor, *point, u.ID); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "revoked point %s from %s\n", *point, u.Email)
		return nil
	}
}

func adminOwnerList(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "the point's code")
	check := func() error { return need([2]string{"point", *point}) }
	return check, func(ctx context.Context, a *adminEnv) error {
		owners, err := a.store.Owners(ctx, a.actor, *point)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tEMAIL\tNAME\tRELATION\tPERMISSIONS\tSINCE")
		for _, o := range owners {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", o.UserID, o.Email, orDash(o.Name), o.Relation, joinPerms(o.Permissions),
				o.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
}

func permissionNames() []string {
	var out []string
	for _, p := range accounts.AllPermissions() {
		out = append(out, string(p))
	}
	return out
}

func joinPerms(ps []accounts.Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
