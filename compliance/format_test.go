package compliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
)

func f(v float64) *float64 { return &v }

func TestFormatDecimal(t *testing.T) {
	cases := []struct {
		v    float64
		want string
		err  bool
	}{
		{15.31, "15.31", false},
		{15.3, "15.30", false},
		{0, "0.00", false},
		{math.Copysign(0, -1), "0.00", false},
		{1234567.891, "1234567.89", false}, // no thousands separator
		{42.499, "42.50", false},
		{-0.01, "", true},
		{math.NaN(), "", true},
		{math.Inf(1), "", true},
	}
	for _, c := range cases {
		got, err := compliance.FormatDecimal("caudal", c.v, 2)
		if c.err {
			require.ErrorIs(t, err, compliance.ErrInvalid, "%v", c.v)
			require.Contains(t, err.Error(), "caudal: ")
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.want, got)
	}
}

func TestFormatTotalizer(t *testing.T) {
	cases := []struct {
		v    float64
		mode string
		want string
		err  bool
	}{
		{1010.99, "truncate", "1010", false},
		{1010.5, "round", "1011", false},
		{0, "truncate", "0", false},
		{999999999999999, "truncate", "999999999999999", false},
		{1e15, "truncate", "", true}, // 16 digits
		{-1, "truncate", "", true},
		{math.NaN(), "truncate", "", true},
	}
	for _, c := range cases {
		got, err := compliance.FormatTotalizer("totalizador", c.v, c.mode)
		if c.err {
			require.ErrorIs(t, err, compliance.ErrInvalid, "%v", c.v)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.want, got)
	}
}

func TestFormatTimes(t *testing.T) {
	scl := loadLoc(t, "America/Santiago")
	gmt4 := loadLoc(t, "Etc/GMT+4")
	cases := []struct {
		name      string
		at        string
		loc       *time.Location
		date, hms string
		local     string
	}{
		{"winter, same in both zones", "2026-06-11T17:00:00Z", gmt4, "2026-06-11", "13:00:00", "2026-06-11T13:00:00"},
		{"summer in Santiago is UTC-3", "2026-01-15T17:00:00Z", scl, "2026-01-15", "14:00:00", "2026-01-15T14:00:00"},
		{"summer in Etc/GMT+4 stays UTC-4", "2026-01-15T17:00:00Z", gmt4, "2026-01-15", "13:00:00", "2026-01-15T13:00:00"},
		{"fall-back first 23:00", "2026-04-05T02:00:00Z", scl, "2026-04-04", "23:00:00", "2026-04-04T23:00:00"},
		{"fall-back second 23:00", "2026-04-05T03:00:00Z", scl, "2026-04-04", "23:00:00", "2026-04-04T23:00:00"},
		{"fall-back in Etc/GMT+4: distinct", "2026-04-05T02:00:00Z", gmt4, "2026-04-04", "22:00:00", "2026-04-04T22:00:00"},
		{"spring-forward day start", "2026-09-06T04:00:00Z", scl, "2026-09-06", "01:00:00", "2026-09-06T01:00:00"},
		{"spring-forward in Etc/GMT+4", "2026-09-06T04:00:00Z", gmt4, "2026-09-06", "00:00:00", "2026-09-06T00:00:00"},
		{"date changes at local midnight", "2026-06-12T03:59:59Z", gmt4, "2026-06-11", "23:59:59", "2026-06-11T23:59:59"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, h := compliance.FormatMeasurementDate(utc(c.at), c.loc)
			require.Equal(t, c.date, d)
			require.Equal(t, c.hms, h)
			require.Equal(t, c.local, compliance.FormatLocal(utc(c.at), c.loc))
		})
	}
	now, at := utc("2026-06-11T17:05:12Z"), utc("2026-06-11T17:00:00Z")
	require.Equal(t, "2026-06-11T13:05:12-0000", compliance.FormatTimeStampOrigen("emeltec3", now, at, gmt4))
	require.Equal(t, "2026-06-11T13:00:00", compliance.FormatTimeStampOrigen("measurement_local", now, at, scl))
	require.Equal(t, "2026-06-11T13:05:12-0400", compliance.FormatTimeStampOrigen("offset", now, at, scl))
	require.Equal(t, "2026-01-11T14:05:12-0300", compliance.FormatTimeStampOrigen("offset", now.AddDate(0, -5, 0), at, scl))
}

func dgaSlot() compliance.Slot {
	return compliance.Slot{
		ID: 1, Point: "well-1", At: utc("2026-06-11T17:00:00Z"),
		Values:      compliance.Values{Flow: f(15.314), Totalizer: f(1010.9), Level: f(9.85)},
		Params:      compliance.Params{WorkCode: "OB-0602-7", CompanyRUT: "77555666-8", InformantRUT: "20999888-2", Standard: "mayor"},
		Credentials: compliance.Credentials{Password: "clave-informante"},
	}
}

func TestDGAPrepare(t *testing.T) {
	p := compliance.NewProtocols(nil)[compliance.ProtocolDGA]
	src := dgaSource(t)
	now := utc("2026-06-11T17:05:12Z")
	req, err := p.Prepare(context.Background(), src, dgaSlot(), now)
	require.NoError(t, err)
	require.Equal(t, "POST", req.Method)
	require.Equal(t, "https://apimee.mop.gob.cl/api/v1/mediciones/subterraneas", req.URL)
	require.Equal(t, "OB-0602-7", req.Header.Get("codigoObra"))
	require.Equal(t, "2026-06-11T13:05:12-0000", req.Header.Get("timeStampOrigen"))
	require.Equal(t, "application/json", req.Header.Get("Content-Type"))
	require.JSONEq(t, `{"autenticacion":{"password":"clave-informante","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"},
		"medicionSubterranea":{"caudal":"15.31","fechaMedicion":"2026-06-11","horaMedicion":"13:00:00",
		"nivelFreaticoDelPozo":"9.85","totalizador":"1010"}}`, string(req.Body))
	require.JSONEq(t, `{"autenticacion":{"password":"****","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"},
		"medicionSubterranea":{"caudal":"15.31","fechaMedicion":"2026-06-11","horaMedicion":"13:00:00",
		"nivelFreaticoDelPozo":"9.85","totalizador":"1010"}}`, string(req.Redacted))
	require.NotContains(t, req.String(), "clave")

	flu := builtin(t, compliance.SourceDGAFlujometro)
	req, err = p.Prepare(context.Background(), flu, dgaSlot(), now)
	require.NoError(t, err)
	require.Equal(t, "https://apimee.mop.gob.cl/api/v1/mediciones/superficiales/flujometro", req.URL)
	require.JSONEq(t, `{"autenticacion":{"password":"clave-informante","rutEmpresa":"77555666-8","rutUsuario":"20999888-2"},
		"medicionSuperficialFlujometro":{"caudal":"15.31","fechaMedicion":"2026-06-11","horaMedicion":"13:00:00","totalizador":"1010"}}`, string(req.Body))
}

func TestDGAPrepareInvalid(t *testing.T) {
	p := compliance.NewProtocols(nil)[compliance.ProtocolDGA]
	sub := dgaSource(t)
	flu := builtin(t, compliance.SourceDGAFlujometro)
	now := utc("2026-06-11T17:05:12Z")
	cases := []struct {
		name   string
		src    compliance.Source
		slot   func(*compliance.Slot)
		reason string // "" = valid
	}{
		{"negative flow", sub, func(s *compliance.Slot) { s.Values.Flow = f(-1) }, "caudal: negative"},
		{"NaN totalizer", sub, func(s *compliance.Slot) { s.Values.Totalizer = f(math.NaN()) }, "totalizador: NaN"},
		{"missing flow", sub, func(s *compliance.Slot) { s.Values.Flow = nil }, "caudal: no flow value"},
		{"missing totalizer", sub, func(s *compliance.Slot) { s.Values.Totalizer = nil }, "totalizador: no totalizer"},
		{"negative level", sub, func(s *compliance.Slot) { s.Values.Level = f(-0.5) }, "nivelFreaticoDelPozo: negative"},
		{"missing level is empty for subterraneas", sub, func(s *compliance.Slot) { s.Values.Level = nil }, ""},
		{"level is not sent to the flowmeter source", flu, func(s *compliance.Slot) { s.Values.Level = nil }, ""},
		{"totalizer too long", sub, func(s *compliance.Slot) { s.Values.Totalizer = f(1e16) }, "totalizador: "},
		{"bad work code", sub, func(s *compliance.Slot) { s.Params.WorkCode = "X" }, "config.codigo_obra"},
		{"no password", sub, func(s *compliance.Slot) { s.Credentials.Password = "" }, "credentials: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			slot := dgaSlot()
			c.slot(&slot)
			req, err := p.Prepare(context.Background(), c.src, slot, now)
			if c.reason == "" {
				require.NoError(t, err)
				require.NotEmpty(t, req.Body)
				return
			}
			require.ErrorIs(t, err, compliance.ErrInvalid)
			require.Contains(t, err.Error(), c.reason)
		})
	}
}

func TestDGAEmptyLevelAndNullFlowSettings(t *testing.T) {
	p := compliance.NewProtocols(nil)[compliance.ProtocolDGA]
	now := utc("2026-06-11T17:05:12Z")
	src := dgaSource(t)
	src.Settings = json.RawMessage(`{"body_key":"medicionSubterranea","empty_level":false,"missing_flow":"null","time_stamp_origen":"measurement_local"}`)
	slot := dgaSlot()
	slot.Values.Level = nil
	_, err := p.Prepare(context.Background(), src, slot, now)
	require.ErrorIs(t, err, compliance.ErrInvalid)
	require.Contains(t, err.Error(), "nivelFreaticoDelPozo: no level value")

	slot = dgaSlot()
	slot.Values.Flow = nil
	req, err := p.Prepare(context.Background(), src, slot, now)
	require.NoError(t, err)
	require.Contains(t, string(req.Body), `"caudal":null`)
	require.Equal(t, "2026-06-11T13:00:00", req.Header.Get("timeStampOrigen"))
}

// A record that fails its schema is ErrInvalid with a reason naming the
// field, even when formatting let it through.
func TestDGAPrepareSchema(t *testing.T) {
	p := compliance.NewProtocols(nil)[compliance.ProtocolDGA]
	now := utc("2026-06-11T17:05:12Z")
	src := dgaSource(t)
	src.Settings = json.RawMessage(`{"body_key":"medicionSubterranea","decimals":3,"empty_level":true}`)
	_, err := p.Prepare(context.Background(), src, dgaSlot(), now)
	require.ErrorIs(t, err, compliance.ErrInvalid)
	t.Log(err)
	require.Contains(t, err.Error(), "schema: ")
	require.Contains(t, err.Error(), "medicionSubterranea.caudal: ")
	require.Contains(t, err.Error(), "medicionSubterranea.nivelFreaticoDelPozo: ")
	require.NotContains(t, err.Error(), "clave-informante")

	// A wrong body key fails the schema's required and additionalProperties.
	src.Settings = json.RawMessage(`{"body_key":"medicion"}`)
	_, err = p.Prepare(context.Background(), src, dgaSlot(), now)
	require.ErrorIs(t, err, compliance.ErrInvalid)
	require.Contains(t, err.Error(), "medicionSubterranea")

	// A bad date in a custom schema shows the format is asserted.
	src = dgaSource(t)
	src.Schema = json.RawMessage(`{"type":"object","properties":{"medicionSubterranea":{"type":"object","properties":{"fechaMedicion":{"format":"date"},"horaMedicion":{"const":"00:00:00"}}}}}`)
	_, err = p.Prepare(context.Background(), src, dgaSlot(), now)
	require.True(t, errors.Is(err, compliance.ErrInvalid))
	require.Contains(t, err.Error(), "medicionSubterranea.horaMedicion: ")
}
