package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/testenv"
)

// TestAdminComplianceUsage checks the compliance command lines admin
// refuses before touching the database: exit 2, naming the flag.
func TestAdminComplianceUsage(t *testing.T) {
	t.Parallel()
	add := []string{"admin", "compliance", "config-add", "--point", "P", "--source", "dga-subterraneas"}
	cases := []cliCase{
		{name: "no action", args: []string{"admin", "compliance"}, code: 2,
			stderr: []string{"compliance: want an action: sources, config-add, config-list, config-end, slots, resubmit"}},
		{name: "help", args: []string{"admin", "compliance", "config-add", "--help"}, code: 0,
			stderr: []string{"Usage: stackvps [--config FILE] admin compliance config-add", "-password-env", "-password-stdin", "-codigo-obra"}},
		{name: "missing start", args: add, code: 2, stderr: []string{"compliance config-add: --start is required"}},
		{name: "missing source", args: []string{"admin", "compliance", "config-add", "--point", "P", "--start", "2026-11-01"}, code: 2,
			stderr: []string{"--source is required"}},
		{name: "password flag refused", args: append(add, "--start", "2026-11-01", "--password", "hunter2"), code: 2,
			stderr: []string{"--password is not accepted", "--password-env"}, never: []string{"hunter2"}},
		{name: "bad start", args: append(add, "--start", "01/11/2026"), code: 2, stderr: []string{`--start "01/11/2026": want a date YYYY-MM-DD`}},
		{name: "end before start", args: append(add, "--start", "2026-11-01", "--end", "2026-10-01"), code: 2,
			stderr: []string{"--end 2026-10-01 must be after --start 2026-11-01"}},
		{name: "bad value mode", args: append(add, "--start", "2026-11-01", "--value-mode", "max"), code: 2, stderr: []string{`--value-mode "max"`}},
		{name: "bad standard", args: append(add, "--start", "2026-11-01", "--standard", "huge"), code: 2, stderr: []string{`--standard "huge"`}},
		{name: "bad frequency", args: append(add, "--start", "2026-11-01", "--frequency", "weekly"), code: 2, stderr: []string{`--frequency "weekly"`}},
		{name: "two password sources", args: append(add, "--start", "2026-11-01", "--password-env", "X", "--password-stdin"), code: 2,
			stderr: []string{"give one of --password-env and --password-stdin"}},
		{name: "username without password", args: append(add, "--start", "2026-11-01", "--username", "u"), code: 2,
			stderr: []string{"--username needs a password"}},
		{name: "end without id", args: []string{"admin", "compliance", "config-end", "--date", "2026-12-01"}, code: 2, stderr: []string{"--id is required"}},
		{name: "end without date", args: []string{"admin", "compliance", "config-end", "--id", "1"}, code: 2, stderr: []string{"--date is required"}},
		{name: "end bad date", args: []string{"admin", "compliance", "config-end", "--id", "1", "--date", "soon"}, code: 2, stderr: []string{`--date "soon"`}},
		{name: "slots bad status", args: []string{"admin", "compliance", "slots", "--status", "pending,DONE"}, code: 2, stderr: []string{`--status "DONE"`}},
		{name: "slots bad limit", args: []string{"admin", "compliance", "slots", "--limit", "0"}, code: 2, stderr: []string{"--limit 0: want 1 to 1000"}},
		{name: "resubmit without reason", args: []string{"admin", "compliance", "resubmit", "--id", "3"}, code: 2, stderr: []string{"--reason is required"}},
		{name: "resubmit without id", args: []string{"admin", "compliance", "resubmit", "--reason", "x"}, code: 2, stderr: []string{"--id is required"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

func TestReadSecret(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in, want, err string
	}{
		{name: "line", in: "s3cret\n", want: "s3cret"},
		{name: "crlf", in: "s3cret\r\nmore\n", want: "s3cret"},
		{name: "no newline", in: "s3cret", want: "s3cret"},
		{name: "spaces kept", in: " pass word \n", want: " pass word "},
		{name: "empty", in: "", err: "holds no password"},
		{name: "empty line", in: "\nx\n", err: "holds no password"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readSecret(strings.NewReader(c.in))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

// TestAdminComplianceIntegration drives every compliance subcommand
// against a fresh migrated schema: sources, configs (password from the
// environment and from stdin, sealed and never printed), slots, ending
// and resubmission, all audited by the command line.
func TestAdminComplianceIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	ctx := testenv.Context(t, 2*time.Minute)
	pool, err := pgxpool.New(ctx, db.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	raw := make([]byte, 32)
	_, err = rand.Read(raw)
	require.NoError(t, err)
	key := base64.StdEncoding.EncodeToString(raw)
	const dgaPass, smaPass = "Dga-Cli-Secret-9", "Sma-Cli-Secret-8"
	environ := append(dbEnv(db), "STACKVPS_COMPLIANCE_CREDENTIALS_KEY="+key, "DGA_PASS="+dgaPass)
	secrets := []string{dgaPass, smaPass, key}
	run := func(c cliCase) {
		t.Helper()
		c.environ = environ
		c.never = append(c.never, secrets...)
		c.check(t)
	}
	run(cliCase{args: []string{"migrate", "--skip-topics"}, code: 0, stdout: []string{"database: mode"}})
	run(cliCase{args: []string{"admin", "point", "create", "--code", "P-1", "--name", "Pozo 1"}, code: 0})

	run(cliCase{args: []string{"admin", "compliance", "sources"}, code: 0,
		stdout: []string{"CODE", "dga-subterraneas", "dga-mee", "Etc/GMT+4", "flow,totalizer,level", "sma", "sma-registros", "America/Santiago"}})

	add := []string{"admin", "compliance", "config-add", "--point", "P-1", "--source", "dga-subterraneas", "--start", "2026-11-01",
		"--rut-empresa", "76543210-3", "--rut-usuario", "12345678-5", "--standard", "mayor"}
	run(cliCase{args: append(add, "--codigo-obra", "0602-7", "--password-env", "DGA_PASS"), code: 1,
		stderr: []string{"--codigo-obra: must look like OB-0602-7"}})
	run(cliCase{args: append(add, "--codigo-obra", "OB-0602-7", "--password-env", "NOT_SET"), code: 1,
		stderr: []string{"the environment variable NOT_SET is unset or empty"}})
	run(cliCase{args: []string{"admin", "compliance", "config-add", "--point", "P-1", "--source", "dga-nope", "--start", "2026-11-01"}, code: 1,
		stderr: []string{`--source: unknown compliance source "dga-nope"`}})
	run(cliCase{args: append(add, "--codigo-obra", "OB-0602-7", "--password-env", "DGA_PASS"), code: 0,
		stdout: []string{"created compliance config 1: point P-1 reports to dga-subterraneas from 2026-11-01 to open-ended (hourly, instant; credentials stored)"}})
	run(cliCase{args: append(add, "--codigo-obra", "OB-0602-7"), code: 1, stderr: []string{"already reports to dga-subterraneas", "config 1"}})

	// The password from stdin, run in process with a given stdin.
	cfg := config.Default()
	cfg.Compliance.CredentialsKey = config.Secret(key)
	runWithStdin := func(stdin string, args ...string) (string, error) {
		t.Helper()
		sub, fn, err := parseAdmin(args, io.Discard)
		require.NoError(t, err)
		var out, errOut bytes.Buffer
		a := &adminEnv{stdout: &out, stderr: &errOut, store: accounts.New(pool), actor: accounts.System("cli:tester"),
			pool: pool, cfg: &cfg, stdin: strings.NewReader(stdin)}
		err = fn(ctx, a)
		for _, s := range secrets {
			require.NotContains(t, out.String()+errOut.String(), s, sub.path())
		}
		return out.String(), err
	}
	sma := []string{"compliance", "config-add", "--point", "P-1", "--source", "sma", "--start", "2026-11-01", "--end", "2027-01-01",
		"--uf-id", "UF1", "--proceso-id", "PR1", "--dispositivo-id", "DV1", "--password-stdin"}
	_, err = runWithStdin(smaPass+"\n", sma...)
	require.ErrorContains(t, err, "--username is required for sma")
	_, err = runWithStdin("", append(sma, "--username", "sma-user")...)
	require.ErrorContains(t, err, "standard input holds no password")
	out, err := runWithStdin(smaPass+"\n", append(sma, "--username", "sma-user")...)
	require.NoError(t, err)
	require.Contains(t, out, "created compliance config 2: point P-1 reports to sma from 2026-11-01 to 2027-01-01 (exclusive) (hourly, instant; credentials stored)")

	// A failed insert consumes an id: after the ones the test counts on.
	run(cliCase{args: []string{"admin", "compliance", "config-add", "--point", "NOPE", "--source", "dga-subterraneas", "--start", "2026-11-01",
		"--codigo-obra", "OB-0602-7", "--rut-empresa", "76543210-3", "--rut-usuario", "12345678-5"}, code: 1,
		stderr: []string{`unknown catchment point "NOPE"`}})

	// Both passwords are sealed under the key and open to what was given.
	sealer, err := compliance.NewSealer(config.Secret(key))
	require.NoError(t, err)
	st := store.New(pool, sealer)
	for id, want := range map[int64]compliance.Credentials{1: {Password: dgaPass}, 2: {Username: "sma-user", Password: smaPass}} {
		var sealed []byte
		require.NoError(t, pool.QueryRow(ctx, `SELECT credentials FROM compliance_configs WHERE id = $1`, id).Scan(&sealed))
		require.NotContains(t, string(sealed), want.Password)
		got, err := st.OpenCredentials(sealed)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}

	run(cliCase{args: []string{"admin", "compliance", "config-list"}, code: 0,
		stdout: []string{"ID", "CREDENTIALS", "dga-subterraneas", "codigo_obra=OB-0602-7 rut_empresa=76543210-3", "sma", "uf_id=UF1", "2027-01-01", "set"}})
	code, stdout, _ := runInProcess(t, environ, "admin", "compliance", "config-list", "--source", "sma")
	require.Equal(t, 0, code)
	require.NotContains(t, stdout, "dga-subterraneas")

	// Slots: seeded as the submit stage would, listed newest first.
	start := time.Date(2026, 11, 2, 4, 0, 0, 0, time.UTC)
	for i := range 4 {
		flow, tot := 12.5, 500.0+float64(i)
		_, err := st.FillSlot(ctx, 1, start.Add(time.Duration(i)*time.Hour), compliance.Values{Flow: &flow, Totalizer: &tot}, 1)
		require.NoError(t, err)
	}
	due, err := st.DueSlots(ctx, "dga-subterraneas", time.Now(), 10)
	require.NoError(t, err)
	require.Len(t, due, 4)
	now := time.Now()
	b, err := st.BeginAttempt(ctx, due[0], store.KindSend, []byte(`{"autenticacion":{"password":"****"}}`), now, now.Add(time.Hour))
	require.NoError(t, err)
	_, err = st.FinishAttempt(ctx, due[0].ID, b, compliance.Outcome{Kind: compliance.Confirmed, Receipt: "RC-77", HTTPStatus: 200}, now,
		store.Policy{RetryRejectedAfter: 24 * time.Hour, MaxAttempts: 7, Backoff: func(int) time.Duration { return time.Minute }, UnknownAfter: time.Hour})
	require.NoError(t, err)
	confirmed, pending := due[0].ID, due[1].ID

	code, stdout, stderr := runInProcess(t, environ, "admin", "compliance", "slots", "--point", "P-1", "--limit", "2")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 3, stdout)
	require.Contains(t, lines[1], "2026-11-02T07:00:00Z")
	require.Contains(t, stderr, "more slots follow")
	run(cliCase{args: []string{"admin", "compliance", "slots", "--status", "confirmed"}, code: 0,
		stdout: []string{fmt.Sprint(confirmed), "2026-11-02T04:00:00Z", "CONFIRMED", "v1", "RC-77"}})

	// Resubmission: only a final slot, with a reason.
	run(cliCase{args: []string{"admin", "compliance", "resubmit", "--id", fmt.Sprint(pending), "--reason", "try"}, code: 1,
		stderr: []string{"is PENDING", "only CONFIRMED, REJECTED, MISSING"}})
	run(cliCase{args: []string{"admin", "compliance", "resubmit", "--id", "9999", "--reason", "try"}, code: 1, stderr: []string{"not found"}})
	run(cliCase{args: []string{"admin", "compliance", "resubmit", "--id", fmt.Sprint(confirmed), "--reason", "DGA lost the receipt"}, code: 0,
		stdout: []string{fmt.Sprintf("slot %d (point P-1, source dga-subterraneas, 2026-11-02T04:00:00Z) is PENDING again in round 1", confirmed)}})

	// Ending keeps the slots with history.
	run(cliCase{args: []string{"admin", "compliance", "config-end", "--id", "1", "--date", "2026-10-01"}, code: 1,
		stderr: []string{"--end", "must be after --start"}})
	run(cliCase{args: []string{"admin", "compliance", "config-end", "--id", "99", "--date", "2026-12-01"}, code: 1,
		stderr: []string{"compliance config 99 not found"}})
	run(cliCase{args: []string{"admin", "compliance", "config-end", "--id", "1", "--date", "2026-12-01"}, code: 0,
		stdout: []string{"ended compliance config 1 (point P-1, source dga-subterraneas): the last day reported is 2026-11-30"}})
	run(cliCase{args: []string{"admin", "compliance", "config-list", "--point", "P-1", "--source", "dga-subterraneas"}, code: 0,
		stdout: []string{"2026-12-01"}})
	var slots int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM compliance_submissions WHERE config_id = 1`).Scan(&slots))
	require.Equal(t, 4, slots)

	// Every change is audited by the command line, never with a secret.
	rows, err := pool.Query(context.Background(), `SELECT action, actor, coalesce(actor_user_id, 0),
		coalesce(before::text, '') || coalesce(after::text, '') FROM audit_log WHERE entity_type LIKE 'compliance%' ORDER BY id`)
	require.NoError(t, err)
	var actions []string
	for rows.Next() {
		var action, actor, text string
		var uid int64
		require.NoError(t, rows.Scan(&action, &actor, &uid, &text))
		actions = append(actions, action)
		require.Zero(t, uid)
		require.True(t, strings.HasPrefix(actor, "cli:"), actor)
		for _, s := range secrets {
			require.NotContains(t, text, s)
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"compliance_config.create", "compliance_config.create", "compliance_submission.resubmit",
		"compliance_config.update"}, actions)
}

// apiCall sends a JSON request with a token to a running API and returns
// the status and body.
func apiCall(t *testing.T, method, url, token string, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Token "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// TestRunAPIComplianceIntegration starts `stackvps run --stages api` and
// checks that the API is wired to the compliance store: the sources that
// `stackvps migrate` synchronised are served, and a config with
// credentials is sealed with compliance.credentials_key, never echoed or
// logged.
func TestRunAPIComplianceIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	kafka := testenv.Kafka(t, 1)
	raw := make([]byte, 32)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	environ := concat(dbEnv(db), kafkaEnv(kafka), []string{"STACKVPS_HTTP_LISTEN=" + listen,
		"STACKVPS_COMPLIANCE_CREDENTIALS_KEY=" + base64.StdEncoding.EncodeToString(raw), "STACKVPS_PIPELINE_SHUTDOWN_TIMEOUT=5s"})
	for _, args := range [][]string{
		{"migrate", "--skip-topics"},
		{"admin", "user", "create", "--email", "ops@example.cl", "--name", "Ops"},
		{"admin", "point", "create", "--code", "P-API", "--name", "Pozo API"},
		{"admin", "owner", "grant", "--point", "P-API", "--email", "ops@example.cl", "--relation", "ADMINISTRATOR"},
	} {
		code, stdout, stderr := runInProcess(t, environ, args...)
		require.Equal(t, 0, code, "%v\n%s\n%s", args, stdout, stderr)
	}
	code, stdout, stderr := runInProcess(t, environ, "admin", "token", "create", "--email", "ops@example.cl", "--name", "test")
	require.Equal(t, 0, code, stderr)
	token := strings.TrimSpace(stdout)

	p := startProc(t, environ, "run", "--stages", "api")
	base := "http://" + listen + "/api/compliance/"
	var status int
	var body string
	require.Eventually(t, func() bool {
		status, body = apiCall(t, http.MethodGet, base+"sources/", token, "")
		return p.exited() || status == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond)
	require.False(t, p.exited(), "stackvps exited: %s", p.stderr)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `"code":"dga-subterraneas"`)

	const pass = "Run-Api-Secret-5"
	status, body = apiCall(t, http.MethodPost, base+"configs/", token, `{"point":"P-API","source":"dga-subterraneas","start_date":"2026-11-01",
		"config":{"codigo_obra":"OB-0602-7","rut_empresa":"76543210-3","rut_usuario":"12345678-5","standard":"mayor"},
		"credentials":{"password":"`+pass+`"}}`)
	require.Equal(t, http.StatusCreated, status, body)
	require.Contains(t, body, `"credentials_set":true`)
	require.NotContains(t, body, pass)
	status, body = apiCall(t, http.MethodGet, base+"data/?point=P-API", token, "")
	require.Equal(t, http.StatusOK, status, body)

	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 15*time.Second), "exit status after SIGTERM")
	require.NotContains(t, p.stderr.String()+p.stdout.String(), pass, "the password is never logged")
}
