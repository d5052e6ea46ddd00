package regulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/regulator"
)

// Paths of the real endpoints.
const (
	pathSub   = "/api/v1/mediciones/subterraneas"
	pathFlujo = "/api/v1/mediciones/superficiales/flujometro"
	pathAuth  = "/api/v1/auth"
)

// Valid RUTs (modulo-11 check digits), from the domain notes' example.
const (
	rutEmpresa = "77555666-8"
	rutUsuario = "20999888-2"
)

// testRegulator is a regulator served by an httptest.Server.
type testRegulator struct {
	*regulator.Server
	URL    string
	client *http.Client
}

// newTestRegulator starts cfg's regulator; cleanup releases held requests,
// then closes the server.
func newTestRegulator(t *testing.T, cfg regulator.Config) *testRegulator {
	t.Helper()
	srv := regulator.New(cfg)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(srv.Close) // runs first: releases hangs so ts.Close does not wait
	return &testRegulator{Server: srv, URL: ts.URL, client: &http.Client{Timeout: 10 * time.Second}}
}

// newFakeClock returns the tests' clock, at a fixed instant.
func newFakeClock() *testenv.Clock {
	return testenv.NewClock(time.Date(2026, 6, 11, 17, 0, 0, 0, time.UTC))
}

// dgaAnswer is a DGA answer body.
type dgaAnswer struct {
	Status  string          `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (a dgaAnswer) receipt(t *testing.T) string {
	t.Helper()
	var d struct {
		NumeroComprobante string `json:"numeroComprobante"`
	}
	if len(a.Data) > 0 {
		require.NoError(t, json.Unmarshal(a.Data, &d))
	}
	return d.NumeroComprobante
}

// measurement is a DGA submission.
type measurement struct {
	path, obra, timestamp string
	password, empresa     string
	usuario               string
	meas                  map[string]any
}

// subterranea returns a valid groundwater measurement of obra at hora.
func subterranea(obra, hora string) measurement {
	return measurement{
		path: pathSub, obra: obra, timestamp: "2026-06-11T13:05:12-0000",
		password: "clave", empresa: rutEmpresa, usuario: rutUsuario,
		meas: map[string]any{"caudal": "15.31", "fechaMedicion": "2026-06-11", "horaMedicion": hora,
			"nivelFreaticoDelPozo": "9.85", "totalizador": "1010"},
	}
}

// flujometro returns a valid surface flowmeter measurement.
func flujometro(obra, hora string) measurement {
	m := subterranea(obra, hora)
	m.path = pathFlujo
	delete(m.meas, "nivelFreaticoDelPozo")
	return m
}

func (m measurement) body() []byte {
	field := "medicionSubterranea"
	if m.path == pathFlujo {
		field = "medicionSuperficialFlujometro"
	}
	b, _ := json.Marshal(map[string]any{
		"autenticacion": map[string]string{"password": m.password, "rutEmpresa": m.empresa, "rutUsuario": m.usuario},
		field:           m.meas,
	})
	return b
}

// postDGA sends m and returns the HTTP status and the decoded answer.
func (r *testRegulator) postDGA(t *testing.T, m measurement) (int, dgaAnswer, http.Header) {
	t.Helper()
	return r.postDGABody(t, m, m.body())
}

func (r *testRegulator) postDGABody(t *testing.T, m measurement, body []byte) (int, dgaAnswer, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, r.URL+m.path, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if m.obra != "" {
		req.Header.Set("codigoObra", m.obra)
	}
	if m.timestamp != "" {
		req.Header.Set("timeStampOrigen", m.timestamp)
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var a dgaAnswer
	require.NoError(t, json.Unmarshal(raw, &a), "answer %s", raw)
	return resp.StatusCode, a, resp.Header
}

// get sends a GET and decodes the JSON answer into v.
func (r *testRegulator) get(t *testing.T, path string, v any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.URL+path, nil)
	require.NoError(t, err)
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if v != nil {
		require.NoError(t, json.Unmarshal(raw, v), "answer %s", raw)
	}
	return resp.StatusCode
}

// do sends method path with body (JSON) and an optional bearer token, and
// returns the status, the raw answer and the headers.
func (r *testRegulator) do(t *testing.T, method, path, bearer, body string) (int, []byte, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, r.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, raw, resp.Header
}

// token authenticates against the SMA endpoint.
func (r *testRegulator) token(t *testing.T, usuario, password string) string {
	t.Helper()
	st, raw, _ := r.do(t, http.MethodPost, pathAuth, "", `{"usuario":"`+usuario+`","password":"`+password+`"}`)
	require.Equal(t, http.StatusOK, st, "auth: %s", raw)
	var a struct {
		Token string `json:"token"`
	}
	require.NoError(t, json.Unmarshal(raw, &a))
	require.NotEmpty(t, a.Token)
	return a.Token
}

// smaAnswer is an SMA answer body.
type smaAnswer struct {
	Mensaje        string `json:"mensaje"`
	IDVerificacion string `json:"IdVerificacion"`
}

// smaPath is the registros path of uf and proceso.
func smaPath(uf, proceso string) string {
	return "/api/v1/ufs/" + uf + "/procesos/" + proceso + "/registros"
}

// smaBody is a registros body for dispositivo at estampa with parameters
// name=valor.
func smaBody(dispositivo, estampa string, params ...string) string {
	type param struct {
		Nombre        string `json:"nombre"`
		Valor         string `json:"valor"`
		Unidad        string `json:"unidad"`
		EstampaTiempo string `json:"estampaTiempo"`
	}
	var ps []param
	for _, p := range params {
		name, val, _ := strings.Cut(p, "=")
		ps = append(ps, param{Nombre: name, Valor: val, Unidad: "u", EstampaTiempo: estampa})
	}
	b, _ := json.Marshal([]map[string]any{{"dispositivoId": dispositivo, "parametros": ps}})
	return string(b)
}

// postSMA posts body to uf/proceso with token and decodes the answer.
func (r *testRegulator) postSMA(t *testing.T, token, uf, proceso, body string) (int, smaAnswer) {
	t.Helper()
	st, raw, _ := r.do(t, http.MethodPost, smaPath(uf, proceso), token, body)
	var a smaAnswer
	require.NoError(t, json.Unmarshal(raw, &a), "answer %s", raw)
	return st, a
}
