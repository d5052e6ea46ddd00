package regulator_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/regulator"
)

var receiptRE = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

func TestDGAAcceptAndVerify(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	for _, m := range []measurement{subterranea("OB-0602-7", "13:00:00"), flujometro("OR-0101-12", "13:00:00")} {
		st, a, _ := reg.postDGA(t, m)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, "00", a.Status)
		require.Equal(t, "Registro exitoso", a.Message)
		receipt := a.receipt(t)
		require.Regexp(t, receiptRE, receipt)

		var v dgaAnswer
		q := url.Values{"codigoObra": {m.obra}, "numeroComprobante": {receipt}}
		require.Equal(t, http.StatusOK, reg.get(t, pathSub+"?"+q.Encode(), &v))
		require.Equal(t, "00", v.Status)
		var data map[string]string
		require.NoError(t, json.Unmarshal(v.Data, &data))
		want := map[string]string{"fechaMedicion": "11-06-2026", "horaMedicion": "13:00:00", "caudal": "15.31",
			"totalizador": "1010", "nivelFreaticoDelPozo": ""}
		if m.path == pathSub {
			want["nivelFreaticoDelPozo"] = "9.85"
		}
		require.Equal(t, want, data)

		key := regulator.DGAKey(m.obra, "2026-06-11", "13:00:00")
		sl, ok := reg.Slot(key)
		require.True(t, ok)
		require.Equal(t, regulator.Slot{API: "dga", Key: key, Requests: 1, Accepted: 1, Receipts: []string{receipt},
			FirstAcceptedAt: sl.FirstAcceptedAt, Data: sl.Data}, sl)
		require.Contains(t, string(sl.Data), `"caudal":"15.31"`)
	}
	require.Equal(t, map[string]int{
		"OB-0602-7|2026-06-11|13:00:00":  1,
		"OR-0101-12|2026-06-11|13:00:00": 1,
	}, reg.Accepted())
	require.Empty(t, reg.Violations())
}

func TestDGADuplicate(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	m := subterranea("OB-0602-7", "14:00:00")
	st, a, _ := reg.postDGA(t, m)
	require.Equal(t, http.StatusOK, st)
	receipt := a.receipt(t)

	// The same slot, other values, and even the other DGA endpoint.
	m.meas["caudal"] = "99.00"
	f := flujometro("OB-0602-7", "14:00:00")
	for _, again := range []measurement{m, f} {
		st, a, _ = reg.postDGA(t, again)
		require.Equal(t, http.StatusBadRequest, st)
		require.Equal(t, "01", a.Status)
		require.Equal(t, "Ya existe un registro en esa fecha, hora para la obra. Comprobante: "+receipt, a.Message)
		// The way clients recover the receipt.
		got := regexp.MustCompile(`(?i)comprobante:\s*([A-Za-z0-9]+)`).FindStringSubmatch(a.Message)
		require.Equal(t, receipt, got[1])
	}
	sl, _ := reg.Slot(regulator.DGAKey("OB-0602-7", "2026-06-11", "14:00:00"))
	require.Equal(t, 3, sl.Requests)
	require.Equal(t, 1, sl.Accepted)
	require.Equal(t, 2, sl.Duplicates)
	require.Equal(t, []string{receipt}, sl.Receipts)
	require.Contains(t, string(sl.Data), `"caudal":"15.31"`, "the first values are kept")

	// Another hour is another slot.
	st, _, _ = reg.postDGA(t, subterranea("OB-0602-7", "15:00:00"))
	require.Equal(t, http.StatusOK, st)
}

func TestDGAFormat(t *testing.T) {
	t.Parallel()
	set := func(field string, v any) func(*measurement) {
		return func(m *measurement) { m.meas[field] = v }
	}
	cases := []struct {
		name  string
		cfg   regulator.Config
		edit  func(*measurement)
		body  string // replaces the body when set
		field string // the message starts with it; "" = accepted
	}{
		{name: "valid", edit: func(*measurement) {}},
		{name: "no codigoObra", edit: func(m *measurement) { m.obra = "" }, field: "codigoObra"},
		{name: "bad codigoObra", edit: func(m *measurement) { m.obra = "OB-602-7" }, field: "codigoObra"},
		{name: "codigoObra OX", edit: func(m *measurement) { m.obra = "OX-0602-7" }, field: "codigoObra"},
		{name: "no timeStampOrigen", edit: func(m *measurement) { m.timestamp = "" }, field: "timeStampOrigen"},
		{name: "lenient timeStampOrigen", edit: func(m *measurement) { m.timestamp = "2026-06-11T13:00:00" }},
		{name: "strict timeStampOrigen", cfg: regulator.Config{StrictTimestamp: true},
			edit: func(m *measurement) { m.timestamp = "2026-06-11T13:00:00" }, field: "timeStampOrigen"},
		{name: "strict timeStampOrigen ok", cfg: regulator.Config{StrictTimestamp: true}, edit: func(*measurement) {}},
		{name: "caudal one decimal", edit: set("caudal", "42.5"), field: "caudal"},
		{name: "caudal no decimals", edit: set("caudal", "42"), field: "caudal"},
		{name: "caudal comma", edit: set("caudal", "42,50"), field: "caudal"},
		{name: "caudal thousands", edit: set("caudal", "1,042.50"), field: "caudal"},
		{name: "caudal number", edit: set("caudal", 42.5), field: "caudal"},
		{name: "caudal negative", edit: set("caudal", "-1.00"), field: "caudal"},
		{name: "caudal null", edit: set("caudal", nil), field: "caudal"},
		{name: "caudal null allowed", cfg: regulator.Config{AllowNullCaudal: true}, edit: set("caudal", nil)},
		{name: "totalizador decimals", edit: set("totalizador", "1010.5"), field: "totalizador"},
		{name: "totalizador 16 digits", edit: set("totalizador", "1234567890123456"), field: "totalizador"},
		{name: "totalizador 15 digits", edit: set("totalizador", "123456789012345")},
		{name: "totalizador number", edit: set("totalizador", 1010), field: "totalizador"},
		{name: "fecha DD-MM-YYYY", edit: set("fechaMedicion", "11-06-2026"), field: "fechaMedicion"},
		{name: "fecha impossible", edit: set("fechaMedicion", "2026-02-30"), field: "fechaMedicion"},
		{name: "hora HH:mm", edit: set("horaMedicion", "13:00"), field: "horaMedicion"},
		{name: "hora 24", edit: set("horaMedicion", "24:00:00"), field: "horaMedicion"},
		{name: "nivel one decimal", edit: set("nivelFreaticoDelPozo", "9.8"), field: "nivelFreaticoDelPozo"},
		{name: "nivel empty", edit: set("nivelFreaticoDelPozo", "")},
		{name: "nivel negative", edit: set("nivelFreaticoDelPozo", "-3.20")},
		{name: "nivel missing", edit: func(m *measurement) { delete(m.meas, "nivelFreaticoDelPozo") }, field: "nivelFreaticoDelPozo"},
		{name: "unknown measurement key", edit: set("temperatura", "20.00"), field: "temperatura"},
		{name: "rut check digit", edit: func(m *measurement) { m.usuario = "20999888-3" }, field: "rutUsuario"},
		{name: "rut check digit skipped", cfg: regulator.Config{SkipRUTCheck: true}, edit: func(m *measurement) { m.usuario = "20999888-3" }},
		{name: "rut with dots", edit: func(m *measurement) { m.empresa = "77.555.666-8" }, field: "rutEmpresa"},
		{name: "empty password", edit: func(m *measurement) { m.password = "" }, field: "password"},
		{name: "not JSON", edit: func(*measurement) {}, body: `{"autenticacion":`, field: "body"},
		{name: "no measurement", edit: func(*measurement) {},
			body: `{"autenticacion":{"password":"p","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"}}`, field: "medicionSubterranea"},
		{name: "wrong measurement object", edit: func(*measurement) {},
			body:  `{"autenticacion":{"password":"p","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"},"medicionSuperficialFlujometro":{}}`,
			field: "medicionSubterranea"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reg := newTestRegulator(t, c.cfg)
			m := subterranea("OB-0602-7", "13:00:00")
			c.edit(&m)
			body := m.body()
			if c.body != "" {
				body = []byte(c.body)
			}
			st, a, _ := reg.postDGABody(t, m, body)
			if c.field == "" {
				require.Equal(t, http.StatusOK, st, a.Message)
				require.Equal(t, "00", a.Status)
				return
			}
			require.Equal(t, http.StatusBadRequest, st)
			require.Equal(t, "99", a.Status)
			require.True(t, strings.HasPrefix(a.Message, c.field+":"), "message %q names %s", a.Message, c.field)
			require.Empty(t, reg.Accepted())
		})
	}

	t.Run("flujometro with a level", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{})
		m := flujometro("OB-0602-7", "13:00:00")
		m.meas["nivelFreaticoDelPozo"] = "1.00"
		st, a, _ := reg.postDGA(t, m)
		require.Equal(t, http.StatusBadRequest, st)
		require.True(t, strings.HasPrefix(a.Message, "nivelFreaticoDelPozo:"), a.Message)
	})
}

func TestDGAInformant(t *testing.T) {
	t.Parallel()
	obras := map[string]regulator.Obra{
		"OB-0602-7": {RutEmpresa: rutEmpresa, RutUsuario: rutUsuario, Password: "clave"},
		"OB-0602-8": {RutUsuario: "11111111-1"},
	}
	cases := []struct {
		name    string
		cfg     regulator.Config
		obra    string
		edit    func(*measurement)
		message string // "" = accepted
	}{
		{name: "registered, right credentials", obra: "OB-0602-7"},
		{name: "registered, other informant", obra: "OB-0602-8", message: "Usuario no es el informante registrado en la Obra"},
		{name: "registered, wrong password", obra: "OB-0602-7", edit: func(m *measurement) { m.password = "otra" },
			message: "Credenciales inválidas"},
		{name: "registered, other centre", obra: "OB-0602-7", edit: func(m *measurement) { m.empresa = "11111111-1" },
			message: "Centro de Control no autorizado para la Obra"},
		{name: "unregistered, anything goes", obra: "OB-0101-1", edit: func(m *measurement) { m.password = "x" }},
		{name: "unregistered, required", cfg: regulator.Config{RequireRegistered: true}, obra: "OB-0101-1",
			message: "Obra no registrada"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := c.cfg
			cfg.Obras = obras
			reg := newTestRegulator(t, cfg)
			m := subterranea(c.obra, "13:00:00")
			if c.edit != nil {
				c.edit(&m)
			}
			st, a, _ := reg.postDGA(t, m)
			if c.message == "" {
				require.Equal(t, http.StatusOK, st, a.Message)
				return
			}
			require.Equal(t, http.StatusBadRequest, st)
			require.Equal(t, "01", a.Status)
			require.Equal(t, c.message, a.Message)
			require.Empty(t, reg.Accepted())
		})
	}

	t.Run("registered at run time", func(t *testing.T) {
		t.Parallel()
		reg := newTestRegulator(t, regulator.Config{})
		reg.RegisterObra("OB-0602-7", regulator.Obra{RutUsuario: "11111111-1"})
		st, a, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
		require.Equal(t, http.StatusBadRequest, st)
		require.Equal(t, "Usuario no es el informante registrado en la Obra", a.Message)
	})
}

func TestDGAVerifyErrors(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	st, a, _ := reg.postDGA(t, subterranea("OB-0602-7", "13:00:00"))
	require.Equal(t, http.StatusOK, st)
	receipt := a.receipt(t)

	var v dgaAnswer
	require.Equal(t, http.StatusNotFound, reg.get(t, pathSub+"?codigoObra=OB-0602-7&numeroComprobante=nope", &v))
	require.Equal(t, "01", v.Status)
	require.Equal(t, http.StatusNotFound, reg.get(t, pathSub+"?codigoObra=OB-0602-8&numeroComprobante="+receipt, &v),
		"a receipt of another obra")
	require.Equal(t, http.StatusBadRequest, reg.get(t, pathSub+"?numeroComprobante="+receipt, &v))
	require.True(t, strings.HasPrefix(v.Message, "codigoObra:"), v.Message)
	require.Equal(t, http.StatusBadRequest, reg.get(t, pathSub+"?codigoObra=OB-0602-7", &v))
	require.True(t, strings.HasPrefix(v.Message, "numeroComprobante:"), v.Message)
}

func TestRUTCheckDigit(t *testing.T) {
	t.Parallel()
	for digits, want := range map[string]string{"77555666": "8", "20999888": "2", "11111111": "1", "12345678": "5", "10000013": "K", "10000004": "0"} {
		require.Equal(t, want, regulator.RUTCheckDigit(digits), digits)
	}
}

func TestUnknownPathIsRecorded(t *testing.T) {
	t.Parallel()
	reg := newTestRegulator(t, regulator.Config{})
	st, _, _ := reg.do(t, http.MethodPost, "/api/v1/mediciones/subterranea", "", `{}`)
	require.Equal(t, http.StatusNotFound, st)
	reqs := reg.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, regulator.EndpointUnknown, reqs[0].Endpoint)
	require.Equal(t, "/api/v1/mediciones/subterranea", reqs[0].Path)
}
