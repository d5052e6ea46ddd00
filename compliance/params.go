package compliance

import (
	"fmt"
	"regexp"
	"strings"
)

// Frequencies of slots.
const (
	Hourly     = "hourly"     // every hour at minute 0
	Daily      = "daily"      // every day at 00:00
	Monthly    = "monthly"    // day 1 at 00:00
	Semiannual = "semiannual" // 1 January and 1 July at 00:00
)

// DGA standards (Res. DGA 1.238/2019).
const (
	StandardMayor       = "mayor"
	StandardMedio       = "medio"
	StandardMenor       = "menor"
	StandardMuyPequenos = "muy_pequenos"
	StandardSinEstandar = "sin_estandar"
)

// Value modes.
const (
	// ValueInstant reports the reading at the slot instant (the default).
	ValueInstant = "instant"
	// ValueMean reports the mean over the slot's period.
	ValueMean = "mean"
)

// StandardFrequency maps a DGA standard to its frequency, as the reference
// implementations schedule it: mayor and sin_estandar hourly, medio daily,
// menor monthly, muy_pequenos semiannual. UNCONFIRMED against Res. 1.238:
// a config may set frequency explicitly instead.
var standardFrequency = map[string]string{
	StandardMayor:       Hourly,
	StandardSinEstandar: Hourly,
	StandardMedio:       Daily,
	StandardMenor:       Monthly,
	StandardMuyPequenos: Semiannual,
}

// StandardFrequency returns the frequency of a DGA standard and whether the
// standard is known. The mapping is UNCONFIRMED (see doc.go).
func StandardFrequency(standard string) (string, bool) {
	f, ok := standardFrequency[standard]
	return f, ok
}

// ValidFrequency reports whether f is a known frequency.
func ValidFrequency(f string) bool {
	switch f {
	case Hourly, Daily, Monthly, Semiannual:
		return true
	}
	return false
}

// Params are what one compliance config (compliance_configs.config, JSON
// with snake_case keys) says about reporting one point to one source.
type Params struct {
	// WorkCode is DGA's codigoObra, e.g. "OB-0602-7" (dga-mee).
	WorkCode string `json:"codigo_obra,omitempty"`
	// CompanyRUT is the Centro de Control's RUT, "NNNNNNNN-D" (dga-mee).
	CompanyRUT string `json:"rut_empresa,omitempty"`
	// InformantRUT is the informant's RUT registered for the obra (dga-mee).
	InformantRUT string `json:"rut_usuario,omitempty"`
	// Standard is the DGA standard: mayor, medio, menor, muy_pequenos or
	// sin_estandar. It gives the frequency when Frequency is empty.
	Standard string `json:"standard,omitempty"`
	// Frequency is hourly, daily, monthly or semiannual. Empty: from
	// Standard, else hourly.
	Frequency string `json:"frequency"`
	// ValueMode is instant (default) or mean.
	ValueMode string `json:"value_mode"`
	// UF, Process and Device are SMA's Unidad Fiscalizable, Proceso and
	// Dispositivo ids (sma-registros).
	UF      string `json:"uf_id,omitempty"`
	Process string `json:"proceso_id,omitempty"`
	Device  string `json:"dispositivo_id,omitempty"`
}

// Normalized returns p with the defaults filled in: Frequency from Standard
// (hourly when neither is given) and ValueMode instant; RUTs upper-cased.
func (p Params) Normalized() Params {
	if p.Frequency == "" {
		p.Frequency = Hourly
		if f, ok := StandardFrequency(p.Standard); ok {
			p.Frequency = f
		}
	}
	if p.ValueMode == "" {
		p.ValueMode = ValueInstant
	}
	p.CompanyRUT = strings.ToUpper(strings.TrimSpace(p.CompanyRUT))
	p.InformantRUT = strings.ToUpper(strings.TrimSpace(p.InformantRUT))
	return p
}

var workCodeRE = regexp.MustCompile(`^O[BR]-\d{4}-\d+$`)

// Validate checks p (after Normalized) for src. Every problem is reported,
// each naming its field ("config.codigo_obra: ..."); the error wraps
// ErrInvalid.
func (p Params) Validate(src Source) error {
	p = p.Normalized()
	var errs []string
	add := func(field, format string, args ...any) {
		errs = append(errs, "config."+field+": "+fmt.Sprintf(format, args...))
	}
	if p.Standard != "" {
		if _, ok := StandardFrequency(p.Standard); !ok {
			add("standard", "must be one of mayor, medio, menor, muy_pequenos, sin_estandar; got %q", p.Standard)
		}
	}
	if !ValidFrequency(p.Frequency) {
		add("frequency", "must be hourly, daily, monthly or semiannual; got %q", p.Frequency)
	}
	if p.ValueMode != ValueInstant && p.ValueMode != ValueMean {
		add("value_mode", "must be instant or mean; got %q", p.ValueMode)
	}
	switch src.Protocol {
	case ProtocolDGA:
		if !workCodeRE.MatchString(p.WorkCode) {
			add("codigo_obra", "must look like OB-0602-7 (OB|OR, 4 digits, a number); got %q", p.WorkCode)
		}
		for _, r := range []struct{ field, v string }{{"rut_empresa", p.CompanyRUT}, {"rut_usuario", p.InformantRUT}} {
			if r.v == "" {
				add(r.field, "is required for %s", src.Code)
			} else if err := checkRUT(r.v); err != nil {
				add(r.field, "%v", err)
			}
		}
	case ProtocolSMA:
		for _, r := range []struct{ field, v string }{{"uf_id", p.UF}, {"proceso_id", p.Process}, {"dispositivo_id", p.Device}} {
			if strings.TrimSpace(r.v) == "" {
				add(r.field, "is required for %s", src.Code)
			} else if strings.ContainsAny(r.v, "/?#") {
				add(r.field, "must not contain '/', '?' or '#'; got %q", r.v)
			}
		}
	}
	if len(errs) > 0 {
		return invalidf("%s", strings.Join(errs, "; "))
	}
	return nil
}

var rutRE = regexp.MustCompile(`^[1-9]\d{0,7}-[\dK]$`)

// ValidRUT reports whether s is a Chilean RUT written "NNNNNNNN-D" (no dots,
// a hyphen, upper-case K) whose check digit D is the modulo-11 digit of N.
func ValidRUT(s string) bool { return checkRUT(s) == nil }

func checkRUT(s string) error {
	if !rutRE.MatchString(s) {
		return fmt.Errorf("must be a RUT written NNNNNNNN-D without dots (D 0-9 or K); got %q", s)
	}
	body, dv, _ := strings.Cut(s, "-")
	if want := RUTCheckDigit(body); dv != want {
		return fmt.Errorf("check digit of %q must be %s", s, want)
	}
	return nil
}

// RUTCheckDigit returns the modulo-11 check digit ("0"-"9" or "K") of the
// digits of a RUT's number.
func RUTCheckDigit(number string) string {
	sum, w := 0, 2
	for i := len(number) - 1; i >= 0; i-- {
		sum += int(number[i]-'0') * w
		if w++; w > 7 {
			w = 2
		}
	}
	switch d := 11 - sum%11; d {
	case 11:
		return "0"
	case 10:
		return "K"
	default:
		return fmt.Sprint(d)
	}
}
