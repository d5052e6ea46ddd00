// Command stackvps is the one binary of Stack VPS: it runs pipeline stages,
// migrates the database and topics, simulates a sensor fleet and checks the
// installation. main only wires; the work lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// usageError marks a bad command line; it exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// env is what a command sees of the outside world.
type env struct {
	stdout, stderr io.Writer
	environ        []string
	configPath     string
}

// command is one subcommand: its flags and what it does.
type command struct {
	name    string
	summary string
	usage   string // arguments after the flags, for --help
	// setup declares the command's flags on fs and returns the function that
	// runs it with the remaining arguments.
	setup func(fs *flag.FlagSet) func(ctx context.Context, e *env, args []string) error
	// args validates positional arguments; nil accepts none.
	args func(args []string) error
}

func commands() []*command {
	return []*command{
		runCommand(),
		migrateCommand(),
		doctorCommand(),
		simulateCommand(),
		configCommand(),
		adminCommand(),
		regulatorCommand(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, environ: environ}
	fn, rest, err := parse(args, e)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "stackvps:", err)
		return 2
	}
	if err := fn(ctx, e, rest); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "stackvps:", err)
			return 2
		}
		var se *silentError
		if !errors.As(err, &se) {
			fmt.Fprintln(stderr, "stackvps:", err)
		}
		return 1
	}
	return 0
}

// silentError is a failure the command already reported on its own.
type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }
func (e *silentError) Unwrap() error { return e.err }

// checkArgs validates a command line (command, flags, arguments, stage names)
// without running it. Tests use it to check that docker-compose.yml and the
// docs only give commands the binary accepts.
func checkArgs(args []string) error {
	_, _, err := parse(args, &env{stdout: io.Discard, stderr: io.Discard})
	return err
}

func parse(args []string, e *env) (func(context.Context, *env, []string) error, []string, error) {
	global := flag.NewFlagSet("stackvps", flag.ContinueOnError)
	global.SetOutput(e.stderr)
	global.StringVar(&e.configPath, "config", "", "configuration file (default: $STACKVPS_CONFIG, else ./stackvps.yaml when present)")
	global.Usage = func() { printUsage(e.stderr, global) }
	if err := global.Parse(args); err != nil {
		return nil, nil, err
	}
	if e.configPath == "" {
		e.configPath = lookupEnv(e.environ, "STACKVPS_CONFIG")
	}
	rest := global.Args()
	if len(rest) == 0 {
		printUsage(e.stderr, global)
		return nil, nil, &usageError{"no command given"}
	}
	name := rest[0]
	if name == "help" {
		printUsage(e.stdout, global)
		return nil, nil, flag.ErrHelp
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet("stackvps "+c.name, flag.ContinueOnError)
		fs.SetOutput(e.stderr)
		fn := c.setup(fs)
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage: stackvps [--config FILE] %s [flags] %s\n\n%s\n\nFlags:\n", c.name, c.usage, c.summary)
			fs.PrintDefaults()
		}
		if err := fs.Parse(rest[1:]); err != nil {
			return nil, nil, err
		}
		pos := fs.Args()
		if c.args == nil && len(pos) > 0 {
			return nil, nil, &usageError{fmt.Sprintf("%s: unexpected argument %q", c.name, pos[0])}
		}
		if c.args != nil {
			if err := c.args(pos); err != nil {
				return nil, nil, &usageError{fmt.Sprintf("%s: %v", c.name, err)}
			}
		}
		return fn, pos, nil
	}
	return nil, nil, &usageError{fmt.Sprintf("unknown command %q (try `stackvps help`)", name)}
}

func printUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprintln(w, "Usage: stackvps [--config FILE] COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Stack VPS moves water telemetry from MQTT through Kafka into TimescaleDB.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Global flags:")
	global.SetOutput(w)
	global.PrintDefaults()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `stackvps COMMAND --help` for a command's flags. Configuration keys: `stackvps config keys`.")
}

func lookupEnv(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(environ[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}
