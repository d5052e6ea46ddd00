package compliance_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
)

func TestRUTCheckDigit(t *testing.T) {
	for number, want := range map[string]string{
		"77555666": "8", // 6*2+6*3+6*4+5*5+5*6+5*7+7*2+7*3 = 179; 179 mod 11 = 3; 11-3 = 8
		"20999888": "2", // 240 mod 11 = 9; 11-9 = 2
		"12345678": "5",
		"10000013": "K", // 11 - r = 10 -> K
		"143":      "0", // 3*2+4*3+1*4 = 22; 22 mod 11 = 0; 11 -> 0
		"6":        "K",
	} {
		require.Equal(t, want, compliance.RUTCheckDigit(number), number)
	}
}

func TestValidRUT(t *testing.T) {
	for rut, want := range map[string]bool{
		"77555666-8":   true,
		"20999888-2":   true,
		"76086428-5":   true,
		"10000013-K":   true,
		"143-0":        true,
		"77555666-7":   false, // wrong check digit
		"77555666-K":   false,
		"10000013-0":   false,
		"10000013-k":   false, // lower-case k
		"77.555.666-8": false, // dots
		"775556668":    false, // no hyphen
		"01234567-8":   false, // leading zero
		"123456789-1":  false, // too long
		"":             false,
		"-8":           false,
	} {
		require.Equal(t, want, compliance.ValidRUT(rut), rut)
	}
}

func dgaSource(t *testing.T) compliance.Source {
	t.Helper()
	return builtin(t, compliance.SourceDGASubterraneas)
}

func builtin(t *testing.T, code string) compliance.Source {
	t.Helper()
	for _, s := range compliance.BuiltinSources() {
		if s.Code == code {
			return s
		}
	}
	t.Fatalf("no built-in source %s", code)
	return compliance.Source{}
}

func TestParamsValidate(t *testing.T) {
	dga := dgaSource(t)
	sma := builtin(t, compliance.SourceSMA)
	good := compliance.Params{WorkCode: "OB-0602-7", CompanyRUT: "77555666-8", InformantRUT: "20999888-2", Standard: "mayor"}
	goodSMA := compliance.Params{UF: "1234", Process: "55", Device: "12180", Frequency: "hourly"}
	cases := []struct {
		name string
		src  compliance.Source
		p    compliance.Params
		errs []string // substrings; none = valid
	}{
		{"dga valid", dga, good, nil},
		{"restitution work code", dga, with(good, func(p *compliance.Params) { p.WorkCode = "OR-1301-12345" }), nil},
		{"lower-case k is normalised", dga, with(good, func(p *compliance.Params) { p.CompanyRUT = "10000013-k" }), nil},
		{"bad work code", dga, with(good, func(p *compliance.Params) { p.WorkCode = "OB-602-7" }), []string{"config.codigo_obra: "}},
		{"missing work code", dga, with(good, func(p *compliance.Params) { p.WorkCode = "" }), []string{"config.codigo_obra: "}},
		{"bad company check digit", dga, with(good, func(p *compliance.Params) { p.CompanyRUT = "77555666-7" }), []string{"config.rut_empresa: check digit"}},
		{"missing informant", dga, with(good, func(p *compliance.Params) { p.InformantRUT = "" }), []string{"config.rut_usuario: is required"}},
		{"dotted informant", dga, with(good, func(p *compliance.Params) { p.InformantRUT = "20.999.888-2" }), []string{"config.rut_usuario: must be a RUT"}},
		{"unknown standard", dga, with(good, func(p *compliance.Params) { p.Standard = "grande" }), []string{"config.standard: "}},
		{"unknown frequency", dga, with(good, func(p *compliance.Params) { p.Frequency = "weekly" }), []string{"config.frequency: "}},
		{"unknown value mode", dga, with(good, func(p *compliance.Params) { p.ValueMode = "max" }), []string{"config.value_mode: "}},
		{"several problems at once", dga, compliance.Params{ValueMode: "x"}, []string{"config.codigo_obra", "config.rut_empresa", "config.rut_usuario", "config.value_mode"}},
		{"sma valid", sma, goodSMA, nil},
		{"sma needs its ids", sma, compliance.Params{}, []string{"config.uf_id: is required", "config.proceso_id: is required", "config.dispositivo_id: is required"}},
		{"sma ids are path segments", sma, with(goodSMA, func(p *compliance.Params) { p.UF = "1/2" }), []string{"config.uf_id: must not contain"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.p.Validate(c.src)
			if len(c.errs) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.True(t, errors.Is(err, compliance.ErrInvalid))
			for _, want := range c.errs {
				require.Contains(t, err.Error(), want)
			}
		})
	}
}

func with(p compliance.Params, f func(*compliance.Params)) compliance.Params {
	f(&p)
	return p
}

func TestParamsFrequencyFromStandard(t *testing.T) {
	for standard, want := range map[string]string{
		"mayor": "hourly", "sin_estandar": "hourly", "medio": "daily", "menor": "monthly", "muy_pequenos": "semiannual", "": "hourly",
	} {
		p := compliance.Params{Standard: standard}.Normalized()
		require.Equal(t, want, p.Frequency, standard)
		require.Equal(t, "instant", p.ValueMode)
	}
	p := compliance.Params{Standard: "mayor", Frequency: "daily"}.Normalized()
	require.Equal(t, "daily", p.Frequency, "an explicit frequency wins over the standard")
	require.True(t, strings.HasPrefix(compliance.Params{CompanyRUT: " 10000013-k "}.Normalized().CompanyRUT, "10000013-K"))
}
