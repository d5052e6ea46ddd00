package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
)

// adminComplianceSubs are the `stackvps admin compliance ACTION`
// subcommands: the regulators' sources, the points' compliance configs,
// their slots and resubmissions. Changes are audited by the compliance
// store with the command line's actor; credentials are read from the
// environment or stdin, never from a flag, and never printed.
func adminComplianceSubs() []*adminSub {
	return []*adminSub{
		{group: "compliance", action: "sources", summary: "list the regulators' sources (as `stackvps migrate` synchronised them)", setup: adminComplianceSources},
		{group: "compliance", action: "config-add",
			synopsis: "--point P --source S --start D [--end D] [--codigo-obra C --rut-empresa R --rut-usuario R --standard S | --uf-id U --proceso-id P --dispositivo-id D] [--value-mode instant|mean] [--username U] [--password-env VAR | --password-stdin]",
			summary:  "bind a point to a source from a date; the password comes from an environment variable or stdin, never a flag", setup: adminComplianceConfigAdd},
		{group: "compliance", action: "config-list", synopsis: "[--point P] [--source S]", summary: "list compliance configs (never their credentials)", setup: adminComplianceConfigList},
		{group: "compliance", action: "config-end", synopsis: "--id N --date YYYY-MM-DD", summary: "end a config: the last day reported is the day before --date; its history stays", setup: adminComplianceConfigEnd},
		{group: "compliance", action: "slots", synopsis: "[--point P] [--source S] [--status S[,S]] [--limit 50]", summary: "list reporting slots, newest first", setup: adminComplianceSlots},
		{group: "compliance", action: "resubmit", synopsis: "--id N --reason R", summary: "ask for one slot to be submitted again (CONFIRMED, REJECTED, MISSING or set aside)", setup: adminComplianceResubmit},
	}
}

// complianceStore returns the compliance store on the admin command's
// pool, sealing with compliance.credentials_key when it is set.
func (a *adminEnv) complianceStore() (*store.Store, error) {
	var sealer *compliance.Sealer
	if a.cfg != nil && a.cfg.Compliance.CredentialsKey != "" {
		var err error
		if sealer, err = compliance.NewSealer(a.cfg.Compliance.CredentialsKey); err != nil {
			return nil, err
		}
	}
	return store.New(a.pool, sealer), nil
}

// parseDay parses a --flag date YYYY-MM-DD.
func parseDay(flagName, s string) (time.Time, error) {
	t, err := time.Parse(store.DateLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want a date YYYY-MM-DD such as 2026-11-01", flagName, s)
	}
	return t, nil
}

// paramFlags maps the params' JSON names in validation messages to the
// flags that set them.
var paramFlags = strings.NewReplacer(
	"config.codigo_obra", "--codigo-obra", "config.rut_empresa", "--rut-empresa", "config.rut_usuario", "--rut-usuario",
	"config.standard", "--standard", "config.frequency", "--frequency", "config.value_mode", "--value-mode",
	"config.uf_id", "--uf-id", "config.proceso_id", "--proceso-id", "config.dispositivo_id", "--dispositivo-id",
	"start_date", "--start", "end_date", "--end")

// cliError rewrites a compliance error for the command line: field names
// become the flags that set them.
func cliError(err error) error {
	if err == nil {
		return nil
	}
	return &flagNamedError{msg: paramFlags.Replace(err.Error()), err: err}
}

// flagNamedError is an error whose text names flags instead of fields; it
// unwraps to the original.
type flagNamedError struct {
	msg string
	err error
}

func (e *flagNamedError) Error() string { return e.msg }
func (e *flagNamedError) Unwrap() error { return e.err }

// readSecret returns the first line of r, without its line ending; an
// empty line is an error.
func readSecret(r io.Reader) (string, error) {
	if r == nil {
		return "", errors.New("no standard input")
	}
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("--password-stdin: standard input holds no password (one line expected)")
	}
	return line, nil
}

func adminComplianceSources(*flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	return func() error { return nil }, func(ctx context.Context, a *adminEnv) error {
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		srcs, err := st.Sources(ctx)
		if err != nil {
			return err
		}
		if len(srcs) == 0 {
			fmt.Fprintln(a.stderr, "no compliance sources: run `stackvps migrate` to synchronise them with the configuration")
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CODE\tNAME\tPROTOCOL\tTIME ZONE\tVARIABLES\tACTIVE\tENDPOINT")
		for _, s := range srcs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", s.Code, orDash(s.Name), s.Protocol, s.TimeZone,
				strings.Join(s.Variables, ","), s.Active, s.Endpoint)
		}
		return tw.Flush()
	}
}

func adminComplianceConfigAdd(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "the point's code")
	source := fs.String("source", "", "the source's code (stackvps admin compliance sources lists them)")
	start := fs.String("start", "", "the first day reported, YYYY-MM-DD, in the source's time zone")
	end := fs.String("end", "", "the first day no longer reported (exclusive), YYYY-MM-DD; default open-ended")
	var p compliance.Params
	fs.StringVar(&p.WorkCode, "codigo-obra", "", "DGA work code, e.g. OB-0602-7 (DGA sources)")
	fs.StringVar(&p.CompanyRUT, "rut-empresa", "", "RUT of the Centro de Control, NNNNNNNN-D (DGA)")
	fs.StringVar(&p.InformantRUT, "rut-usuario", "", "RUT of the informant registered for the obra (DGA)")
	fs.StringVar(&p.Standard, "standard", "", "DGA standard: mayor, medio, menor, muy_pequenos or sin_estandar")
	fs.StringVar(&p.Frequency, "frequency", "", "hourly, daily, monthly or semiannual; default from --standard, else hourly")
	fs.StringVar(&p.ValueMode, "value-mode", compliance.ValueInstant, "instant (the value at the slot) or mean (over its period)")
	fs.StringVar(&p.UF, "uf-id", "", "SMA Unidad Fiscalizable id (SMA)")
	fs.StringVar(&p.Process, "proceso-id", "", "SMA proceso id (SMA)")
	fs.StringVar(&p.Device, "dispositivo-id", "", "SMA dispositivo id (SMA)")
	username := fs.String("username", "", "the regulator user name (SMA usuario)")
	passwordEnv := fs.String("password-env", "", "read the password from this environment variable")
	passwordStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	password := fs.String("password", "", "not accepted: a password on the command line is visible to other users; use --password-env or --password-stdin")
	var startDay time.Time
	var endDay *time.Time
	check := func() error {
		if *password != "" {
			return errors.New("--password is not accepted: a password on the command line is visible in the process list and " +
				"shell history; use --password-env VAR or --password-stdin")
		}
		if err := need([2]string{"point", *point}, [2]string{"source", *source}, [2]string{"start", *start}); err != nil {
			return err
		}
		var err error
		if startDay, err = parseDay("start", *start); err != nil {
			return err
		}
		if *end != "" {
			e, err := parseDay("end", *end)
			if err != nil {
				return err
			}
			if !e.After(startDay) {
				return fmt.Errorf("--end %s must be after --start %s", *end, *start)
			}
			endDay = &e
		}
		if p.Standard != "" {
			if _, ok := compliance.StandardFrequency(p.Standard); !ok {
				return fmt.Errorf("--standard %q: want mayor, medio, menor, muy_pequenos or sin_estandar", p.Standard)
			}
		}
		if p.Frequency != "" && !compliance.ValidFrequency(p.Frequency) {
			return fmt.Errorf("--frequency %q: want hourly, daily, monthly or semiannual", p.Frequency)
		}
		if p.ValueMode != compliance.ValueInstant && p.ValueMode != compliance.ValueMean {
			return fmt.Errorf("--value-mode %q: want instant or mean", p.ValueMode)
		}
		if *passwordEnv != "" && *passwordStdin {
			return errors.New("give one of --password-env and --password-stdin")
		}
		if *username != "" && *passwordEnv == "" && !*passwordStdin {
			return errors.New("--username needs a password: --password-env VAR or --password-stdin")
		}
		return nil
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		var creds *compliance.Credentials
		switch {
		case *passwordEnv != "":
			pw := lookupEnv(a.environ, *passwordEnv)
			if pw == "" {
				return fmt.Errorf("--password-env: the environment variable %s is unset or empty", *passwordEnv)
			}
			creds = &compliance.Credentials{Username: *username, Password: pw}
		case *passwordStdin:
			pw, err := readSecret(a.stdin)
			if err != nil {
				return err
			}
			creds = &compliance.Credentials{Username: *username, Password: pw}
		}
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		src, err := st.Source(ctx, *source)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("--source: unknown compliance source %q (stackvps admin compliance sources lists them)", *source)
		}
		if err != nil {
			return err
		}
		if err := p.Validate(src); err != nil {
			return cliError(err)
		}
		if creds != nil && src.Protocol == compliance.ProtocolSMA && creds.Username == "" {
			return fmt.Errorf("--username is required for %s", src.Code)
		}
		c, err := st.CreateConfig(ctx, a.actor, store.NewConfig{Point: *point, Source: *source, Params: p, Credentials: creds,
			StartDate: startDay, EndDate: endDay})
		if err != nil {
			return cliError(err)
		}
		cred := "no credentials"
		if c.HasCredentials {
			cred = "credentials stored"
		}
		fmt.Fprintf(a.stdout, "created compliance config %d: point %s reports to %s from %s to %s (%s, %s; %s)\n",
			c.ID, c.Point, c.Source, c.StartDate.Format(store.DateLayout), endText(c.EndDate), c.Params.Frequency, c.Params.ValueMode, cred)
		return nil
	}
}

// endText writes a config's end date, or "open-ended".
func endText(t *time.Time) string {
	if t == nil {
		return "open-ended"
	}
	return t.Format(store.DateLayout) + " (exclusive)"
}

// paramsText writes the params that identify a config at the regulator.
func paramsText(p compliance.Params) string {
	var parts []string
	for _, kv := range [][2]string{{"codigo_obra", p.WorkCode}, {"rut_empresa", p.CompanyRUT}, {"rut_usuario", p.InformantRUT},
		{"standard", p.Standard}, {"uf_id", p.UF}, {"proceso_id", p.Process}, {"dispositivo_id", p.Device}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	return orDash(strings.Join(parts, " "))
}

func adminComplianceConfigList(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "only this point's configs")
	source := fs.String("source", "", "only this source's configs")
	return func() error { return nil }, func(ctx context.Context, a *adminEnv) error {
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		cfgs, err := st.ListConfigs(ctx, store.ConfigFilter{Point: *point, Source: *source})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tPOINT\tSOURCE\tSTART\tEND\tFREQUENCY\tVALUE\tCREDENTIALS\tPARAMS")
		for _, c := range cfgs {
			end, cred := "-", "-"
			if c.EndDate != nil {
				end = c.EndDate.Format(store.DateLayout)
			}
			if c.HasCredentials {
				cred = "set"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Point, c.Source, c.StartDate.Format(store.DateLayout),
				end, c.Params.Frequency, c.Params.ValueMode, cred, paramsText(c.Params))
		}
		return tw.Flush()
	}
}

func adminComplianceConfigEnd(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	id := fs.Int64("id", 0, "the config's id (stackvps admin compliance config-list shows it)")
	date := fs.String("date", "", "the first day no longer reported, YYYY-MM-DD")
	var day time.Time
	check := func() error {
		if *id <= 0 {
			return errors.New("--id is required (a positive config id)")
		}
		if err := need([2]string{"date", *date}); err != nil {
			return err
		}
		var err error
		day, err = parseDay("date", *date)
		return err
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		c, err := st.EndConfig(ctx, a.actor, *id, day)
		if err != nil {
			return cliError(err)
		}
		fmt.Fprintf(a.stdout, "ended compliance config %d (point %s, source %s): the last day reported is %s; its slots stay\n",
			c.ID, c.Point, c.Source, day.AddDate(0, 0, -1).Format(store.DateLayout))
		return nil
	}
}

func adminComplianceSlots(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	point := fs.String("point", "", "only this point's slots")
	source := fs.String("source", "", "only this source's slots")
	status := fs.String("status", "", "only slots in these statuses, comma-separated: "+strings.Join(store.Statuses, ", "))
	limit := fs.Int("limit", 50, "at most this many slots (1 to 1000)")
	var statuses []string
	check := func() error {
		if *limit < 1 || *limit > 1000 {
			return fmt.Errorf("--limit %d: want 1 to 1000", *limit)
		}
		statuses = nil
		for s := range strings.SplitSeq(*status, ",") {
			s = strings.ToUpper(strings.TrimSpace(s))
			if s == "" {
				continue
			}
			if !slices.Contains(store.Statuses, s) {
				return fmt.Errorf("--status %q: want %s", s, strings.Join(store.Statuses, ", "))
			}
			statuses = append(statuses, s)
		}
		return nil
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		page, err := st.ListSubmissions(ctx, store.SubmissionFilter{Point: *point, Source: *source, Statuses: statuses, Limit: *limit})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tPOINT\tSOURCE\tSLOT\tSTATUS\tDATA\tATTEMPTS\tRECEIPT\tREASON")
		for _, s := range page.Submissions {
			data := "no"
			if s.Data != nil {
				data = "v" + fmt.Sprint(s.DataVersion)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Point, s.Source, s.SlotAt.UTC().Format(time.RFC3339),
				s.Status, data, s.Attempts, orDash(s.Receipt), orDash(oneLine(s.Reason)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if page.Next != "" {
			fmt.Fprintf(a.stderr, "more slots follow; narrow with --point, --source or --status, or raise --limit\n")
		}
		return nil
	}
}

// oneLine keeps a free text on one table line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 80 {
		s = string(r[:77]) + "..."
	}
	return s
}

func adminComplianceResubmit(fs *flag.FlagSet) (func() error, func(context.Context, *adminEnv) error) {
	id := fs.Int64("id", 0, "the slot's id (stackvps admin compliance slots shows it)")
	reason := fs.String("reason", "", "why it is submitted again (kept in the audit log)")
	check := func() error {
		if *id <= 0 {
			return errors.New("--id is required (a positive slot id)")
		}
		return need([2]string{"reason", *reason})
	}
	return check, func(ctx context.Context, a *adminEnv) error {
		st, err := a.complianceStore()
		if err != nil {
			return err
		}
		s, err := st.RequestResubmission(ctx, a.actor, *id, strings.TrimSpace(*reason))
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "slot %d (point %s, source %s, %s) is PENDING again in round %d\n",
			s.ID, s.Point, s.Source, s.SlotAt.UTC().Format(time.RFC3339), s.Round)
		return nil
	}
}
