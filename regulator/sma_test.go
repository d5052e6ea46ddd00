package regulator_test

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/regulator"
)

const estampa = "2026-05-17T14:05:00"

func TestSMAAcceptAndDuplicate(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	tok := reg.token(t, "76111222-3", "secreto")
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3, "JWT-like")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	require.Contains(t, string(claims), `"sub":"76111222-3"`)

	body := smaBody("12180", estampa, "Q=42.5", "VA=42500")
	st, a := reg.postSMA(t, tok, "123", "4", body)
	require.Equal(t, http.StatusCreated, st)
	require.Equal(t, "ok", a.Mensaje)
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, a.IDVerificacion)

	// Repeated: idempotent, the original IdVerificacion, no new acceptance.
	st, again := reg.postSMA(t, tok, "123", "4", smaBody("12180", estampa, "VA=1", "Q=1"))
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, a.IDVerificacion, again.IDVerificacion)

	key := regulator.SMAKey("123", "4", "12180", estampa)
	sl, ok := reg.Slot(key)
	require.True(t, ok)
	require.Equal(t, "sma", sl.API)
	require.Equal(t, 2, sl.Requests)
	require.Equal(t, 1, sl.Accepted)
	require.Equal(t, 1, sl.Duplicates)
	require.Equal(t, []string{a.IDVerificacion}, sl.Receipts)
	require.JSONEq(t, `{"dispositivoId":"12180","estampaTiempo":"2026-05-17T14:05:00","parametros":[
		{"nombre":"Q","valor":"42.5","unidad":"u"},{"nombre":"VA","valor":"42500","unidad":"u"}]}`, string(sl.Data))

	// Another process, another slot.
	st, _ = reg.postSMA(t, tok, "123", "5", body)
	require.Equal(t, http.StatusCreated, st)
	require.Equal(t, map[string]int{key: 1, regulator.SMAKey("123", "5", "12180", estampa): 1}, reg.Accepted())
}

func TestSMASeveralSlotsInOneCall(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	tok := reg.token(t, "u", "p")
	st, first := reg.postSMA(t, tok, "1", "1", smaBody("d1", estampa, "Q=1", "VA=2"))
	require.Equal(t, http.StatusCreated, st)
	body := `[{"dispositivoId":"d1","parametros":[
		{"nombre":"Q","valor":"1","unidad":"l/s","estampaTiempo":"2026-05-17T14:05:00"},
		{"nombre":"VA","valor":"2","unidad":"m3","estampaTiempo":"2026-05-17T14:05:00"},
		{"nombre":"Q","valor":"3","unidad":"l/s","estampaTiempo":"2026-05-17T14:10:00"},
		{"nombre":"VA","valor":"4","unidad":"m3","estampaTiempo":"2026-05-17T14:10:00"}]},
		{"dispositivoId":"d2","parametros":[
		{"nombre":"Q","valor":"5","unidad":"l/s","estampaTiempo":"2026-05-17T14:10:00"},
		{"nombre":"VA","valor":"6","unidad":"m3","estampaTiempo":"2026-05-17T14:10:00"}]}]`
	st, a := reg.postSMA(t, tok, "1", "1", body)
	require.Equal(t, http.StatusCreated, st, "two new slots, one known")
	require.NotEqual(t, first.IDVerificacion, a.IDVerificacion)
	require.Equal(t, map[string]int{
		"1|1|d1|2026-05-17T14:05:00": 1,
		"1|1|d1|2026-05-17T14:10:00": 1,
		"1|1|d2|2026-05-17T14:10:00": 1,
	}, reg.Accepted())
	sl, _ := reg.Slot("1|1|d1|2026-05-17T14:05:00")
	require.Equal(t, 2, sl.Requests)
	require.Equal(t, 1, sl.Duplicates)
	require.Equal(t, []string{"1|1|d1|2026-05-17T14:05:00", "1|1|d1|2026-05-17T14:10:00", "1|1|d2|2026-05-17T14:10:00"},
		reg.Requests()[len(reg.Requests())-1].Keys)
}

func TestSMAValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  regulator.Config
		body string
		want string // substring of mensaje; "" = accepted
	}{
		{name: "valid", body: smaBody("12180", estampa, "Q=42.5", "VA=42500")},
		{name: "missing parameter", body: smaBody("12180", estampa, "Q=42.5"), want: "falta VA"},
		{name: "extra parameter", body: smaBody("12180", estampa, "Q=42.5", "VA=1", "T=20"), want: `"T" no esperado`},
		{name: "repeated parameter", body: smaBody("12180", estampa, "Q=42.5", "VA=1", "Q=2"), want: `"Q" repetido`},
		{name: "configured parameters", cfg: regulator.Config{SMAParameters: []string{"Q"}}, body: smaBody("12180", estampa, "Q=42.5")},
		{name: "configured parameters, extra", cfg: regulator.Config{SMAParameters: []string{"Q"}},
			body: smaBody("12180", estampa, "Q=42.5", "VA=1"), want: `"VA" no esperado`},
		{name: "valor not a number", body: smaBody("12180", estampa, "Q=mucho", "VA=1"), want: "valor"},
		{name: "estampa with zone", body: smaBody("12180", "2026-05-17T14:05:00-04:00", "Q=1", "VA=1"), want: "estampaTiempo"},
		{name: "estampa date only", body: smaBody("12180", "2026-05-17", "Q=1", "VA=1"), want: "estampaTiempo"},
		{name: "empty dispositivo", body: smaBody("", estampa, "Q=1", "VA=1"), want: "dispositivoId"},
		{name: "numeric dispositivo", body: `[{"dispositivoId":12180,"parametros":[{"nombre":"Q","valor":"1","unidad":"u","estampaTiempo":"` + estampa + `"},{"nombre":"VA","valor":"1","unidad":"u","estampaTiempo":"` + estampa + `"}]}]`, want: "dispositivoId"},
		{name: "numeric valor", body: `[{"dispositivoId":"1","parametros":[{"nombre":"Q","valor":1,"unidad":"u","estampaTiempo":"` + estampa + `"},{"nombre":"VA","valor":"1","unidad":"u","estampaTiempo":"` + estampa + `"}]}]`, want: "valor"},
		{name: "unknown key", body: `[{"dispositivoId":"1","extra":1,"parametros":[]}]`, want: "extra"},
		{name: "empty array", body: `[]`, want: "body"},
		{name: "object", body: `{}`, want: "body"},
		{name: "split timestamps", body: `[{"dispositivoId":"1","parametros":[{"nombre":"Q","valor":"1","unidad":"u","estampaTiempo":"2026-05-17T14:05:00"},{"nombre":"VA","valor":"1","unidad":"u","estampaTiempo":"2026-05-17T14:10:00"}]}]`, want: "falta"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reg := newTestRegulator(t, c.cfg)
			tok := reg.token(t, "u", "p")
			st, a := reg.postSMA(t, tok, "123", "4", c.body)
			if c.want == "" {
				require.Equal(t, http.StatusCreated, st, a.Mensaje)
				return
			}
			require.Equal(t, http.StatusBadRequest, st)
			require.Contains(t, a.Mensaje, c.want)
			require.Empty(t, reg.Accepted(), "a call is all or nothing")
		})
	}
}

func TestSMAAuth(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	reg := newTestRegulator(t, regulator.Config{
		SMAUsers: map[string]string{"76111222-3": "secreto"},
		TokenTTL: time.Hour,
		Now:      clock.Now,
	})
	body := smaBody("12180", estampa, "Q=1", "VA=1")

	for _, c := range []struct{ name, body string }{
		{"wrong password", `{"usuario":"76111222-3","password":"otro"}`},
		{"unknown user", `{"usuario":"1-9","password":"secreto"}`},
	} {
		st, _, _ := reg.do(t, http.MethodPost, pathAuth, "", c.body)
		require.Equal(t, http.StatusUnauthorized, st, c.name)
	}
	for _, b := range []string{`{"usuario":"76111222-3"}`, `{"usuario":"","password":"x"}`, `[]`, `{"usuario":"a","password":"b","x":1}`} {
		st, _, _ := reg.do(t, http.MethodPost, pathAuth, "", b)
		require.Equal(t, http.StatusBadRequest, st, b)
	}

	st, _ := reg.postSMA(t, "", "1", "1", body)
	require.Equal(t, http.StatusUnauthorized, st, "no token")
	st, _ = reg.postSMA(t, "forged", "1", "1", body)
	require.Equal(t, http.StatusUnauthorized, st, "unknown token")

	tok := reg.token(t, "76111222-3", "secreto")
	clock.Add(59 * time.Minute)
	st, _ = reg.postSMA(t, tok, "1", "1", body)
	require.Equal(t, http.StatusCreated, st, "still valid")
	clock.Add(time.Minute)
	st, a := reg.postSMA(t, tok, "1", "2", body)
	require.Equal(t, http.StatusUnauthorized, st, "expired after TokenTTL")
	require.Contains(t, a.Mensaje, "expirado")

	tok = reg.token(t, "76111222-3", "secreto")
	st, _ = reg.postSMA(t, tok, "1", "2", body)
	require.Equal(t, http.StatusCreated, st, "a new token works")
	require.Equal(t, 1, reg.ExpireTokens())
	st, _ = reg.postSMA(t, tok, "1", "3", body)
	require.Equal(t, http.StatusUnauthorized, st, "expired by ExpireTokens")

	// The request log hides the token and the password.
	for _, r := range reg.Requests() {
		require.NotContains(t, r.Body, "secreto")
		require.NotContains(t, r.Header["Authorization"], tok)
	}
}

func TestSMADuplicateModes(t *testing.T) {
	t.Parallel()
	body := smaBody("12180", estampa, "Q=1", "VA=1")
	key := regulator.SMAKey("1", "1", "12180", estampa)

	t.Run("accept", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{SMADuplicates: regulator.DuplicateAccept})
		tok := reg.token(t, "u", "p")
		st, a := reg.postSMA(t, tok, "1", "1", body)
		require.Equal(t, http.StatusCreated, st)
		st, b := reg.postSMA(t, tok, "1", "1", body)
		require.Equal(t, http.StatusCreated, st)
		require.NotEqual(t, a.IDVerificacion, b.IDVerificacion)
		require.Equal(t, map[string]int{key: 2}, reg.Accepted())
		v := reg.Violations()
		require.Len(t, v, 1)
		require.Equal(t, []string{a.IDVerificacion, b.IDVerificacion}, v[0].Receipts)
	})
	t.Run("reject", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{SMADuplicates: regulator.DuplicateReject})
		tok := reg.token(t, "u", "p")
		st, _ := reg.postSMA(t, tok, "1", "1", body)
		require.Equal(t, http.StatusCreated, st)
		st, a := reg.postSMA(t, tok, "1", "1", body)
		require.Equal(t, http.StatusBadRequest, st)
		require.Contains(t, a.Mensaje, "duplicado")
		require.Equal(t, map[string]int{key: 1}, reg.Accepted())
		require.Empty(t, reg.Violations())
	})
}

func TestSMAAnswerShape(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	tok := reg.token(t, "u", "p")
	st, raw, hdr := reg.do(t, http.MethodPost, smaPath("1", "1"), tok, smaBody("d", estampa, "Q=1", "VA=1"))
	require.Equal(t, http.StatusCreated, st)
	require.Equal(t, "application/json", hdr.Get("Content-Type"))
	var m map[string]string
	require.NoError(t, json.Unmarshal(raw, &m))
	require.Equal(t, []string{"IdVerificacion", "mensaje"}, slices.Sorted(maps.Keys(m)))
}
