package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/regulator"
)

func TestRegulatorArgs(t *testing.T) {
	t.Parallel()
	faultFile := filepath.Join(t.TempDir(), "faults.json")
	require.NoError(t, os.WriteFile(faultFile, []byte(`[{"kind":"explode"}]`), 0o600))
	cases := []cliCase{
		{name: "help", args: []string{"regulator", "--help"}, code: 0,
			stderr: []string{"Usage: stackvps [--config FILE] regulator", "-listen", "-faults", "-seed", "/_admin/faults", "/api/v1/mediciones/subterraneas"}},
		{name: "bad faults JSON", args: []string{"regulator", "--faults", `{"kind":`}, code: 2, stderr: []string{"regulator: --faults:"}},
		{name: "unknown fault kind", args: []string{"regulator", "--faults", `{"kind":"explode"}`}, code: 2,
			stderr: []string{`unknown fault kind "explode"`}},
		{name: "faults file", args: []string{"regulator", "--faults", faultFile}, code: 2, stderr: []string{`unknown fault kind "explode"`}},
		{name: "missing faults file", args: []string{"regulator", "--faults", "nope.json"}, code: 2, stderr: []string{"reading nope.json"}},
		{name: "bad obras", args: []string{"regulator", "--obras", `{"OB-1":{}}`}, code: 2, stderr: []string{"config.Obras"}},
		{name: "bad duplicates mode", args: []string{"regulator", "--sma-duplicates", "ignore"}, code: 2, stderr: []string{"config.SMADuplicates"}},
		{name: "bad log format", args: []string{"regulator", "--log-format", "xml"}, code: 2, stderr: []string{"--log-format"}},
		{name: "argument", args: []string{"regulator", "now"}, code: 2, stderr: []string{`unexpected argument "now"`}},
		{name: "bad listen", args: []string{"regulator", "--listen", "256.0.0.1:x"}, code: 1, stderr: []string{"listening on"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

// TestRegulatorServes runs the command in-process with a fault from the
// command line, submits through it and stops it by cancelling the context.
func TestRegulatorServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdout, stderr := &testenv.SyncBuffer{}, &testenv.SyncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"regulator", "--listen", "127.0.0.1:0", "--seed", "5",
			"--faults", `{"kind":"server_error","count":1}`,
			"--obras", `{"OB-0602-8":{"rut_usuario":"11111111-1"}}`}, nil, stdout, stderr)
	}()
	base := waitBaseURL(t, stdout, done)

	post := func(obra string) (int, string) {
		body := `{"autenticacion":{"password":"p","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"},` +
			`"medicionSubterranea":{"caudal":"15.31","fechaMedicion":"2026-06-11","horaMedicion":"13:00:00","nivelFreaticoDelPozo":"","totalizador":"1010"}}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/mediciones/subterraneas", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("codigoObra", obra)
		req.Header.Set("timeStampOrigen", "2026-06-11T13:05:12-0000")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	st, _ := post("OB-0602-7")
	require.Equal(t, http.StatusServiceUnavailable, st, "the fault from --faults")
	st, body := post("OB-0602-7")
	require.Equal(t, http.StatusOK, st, body)
	require.Contains(t, body, `"numeroComprobante"`)
	st, body = post("OB-0602-8")
	require.Equal(t, http.StatusBadRequest, st)
	require.Contains(t, body, "Usuario no es el informante registrado en la Obra", "the obra from --obras")

	var rep regulator.AcceptedReport
	resp, err := http.Get(base + "/_admin/accepted") //nolint:noctx // a test
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 1, rep.Accepted)

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, "stderr:\n%s", stderr)
	case <-time.After(10 * time.Second):
		t.Fatal("the regulator did not stop")
	}
	require.Contains(t, stderr.String(), `"msg":"regulator listening"`)
	require.Contains(t, stderr.String(), `"msg":"regulator request"`)
	require.Contains(t, stderr.String(), `"outcome":"accepted"`)
	require.NotContains(t, stdout.String()+stderr.String(), `"password":"p"`)
}

// TestRegulatorProcess runs the binary with nothing in its environment (no
// database, Kafka nor MQTT) and stops it with SIGTERM.
func TestRegulatorProcess(t *testing.T) {
	t.Parallel()
	p := startProc(t, nil, "regulator", "--listen", "127.0.0.1:0", "--log-format", "text")
	base := waitBaseURL(t, p.stdout, p.done)
	resp, err := http.Post(base+"/api/v1/auth", "application/json", //nolint:noctx // a test
		bytes.NewReader([]byte(`{"usuario":"76111222-3","password":"x"}`)))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), `"token"`)
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 10*time.Second))
	require.Contains(t, p.stderr.String(), "regulator stopped")
}

// waitBaseURL waits for the base URL the command prints on start.
func waitBaseURL[T any](t *testing.T, stdout *testenv.SyncBuffer, done <-chan T) string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		if line, _, ok := strings.Cut(stdout.String(), "\n"); ok {
			require.True(t, strings.HasPrefix(line, "http://127.0.0.1:"), "first line %q", line)
			return line
		}
		select {
		case <-done:
			t.Fatalf("the regulator exited before listening; stdout:\n%s", stdout)
		case <-deadline:
			t.Fatalf("no base URL printed; stdout:\n%s", stdout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
