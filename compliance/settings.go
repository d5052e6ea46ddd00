package compliance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// TimeStampOrigen styles (DGASettings.TimeStampOrigen).
const (
	// StampEmeltec3 sends the time the request is made, in the source's
	// zone, formatted yyyy-MM-ddTHH:mm:ss-0000 (a literal "-0000", which
	// emeltec3 reads in Manual Técnico DGA 1/2025 as "Chile, UTC-4"). The
	// default.
	StampEmeltec3 = "emeltec3"
	// StampMeasurementLocal sends the slot instant in the source's zone with
	// no offset (yyyy-MM-ddTHH:mm:ss), as SmartHydro does.
	StampMeasurementLocal = "measurement_local"
	// StampOffset sends the time the request is made, in the source's zone,
	// with its real numeric offset (yyyy-MM-ddTHH:mm:ss-0400).
	StampOffset = "offset"
)

// Totalizer rounding (Totalizer settings).
const (
	// TotalizerTruncate drops the fraction (the default, as DGA asks).
	TotalizerTruncate = "truncate"
	// TotalizerRound rounds half away from zero.
	TotalizerRound = "round"
)

// Missing-flow handling (DGASettings.MissingFlow).
const (
	// MissingFlowInvalid rejects a slot without a flow value locally (the
	// default).
	MissingFlowInvalid = "invalid"
	// MissingFlowNull sends caudal null, as emeltec3 does (whether DGA
	// accepts it is UNCONFIRMED).
	MissingFlowNull = "null"
)

// DGASettings are the settings of a dga-mee source (Source.Settings, JSON).
// A key absent from the JSON keeps its default (DefaultDGASettings).
type DGASettings struct {
	// BodyKey is the key of the measurement object in the body
	// (medicionSubterranea, medicionSuperficialFlujometro). Required.
	BodyKey string `json:"body_key"`
	// TimeStampOrigen is how the timeStampOrigen header is written:
	// emeltec3 (default), measurement_local or offset. UNCONFIRMED.
	TimeStampOrigen string `json:"time_stamp_origen"`
	// Decimals of caudal and nivelFreaticoDelPozo. Default 2.
	Decimals int `json:"decimals"`
	// Totalizer is truncate (default) or round.
	Totalizer string `json:"totalizer"`
	// MissingFlow is invalid (default: the slot is rejected locally) or
	// null (caudal is sent as null). UNCONFIRMED.
	MissingFlow string `json:"missing_flow"`
	// EmptyLevel sends nivelFreaticoDelPozo "" when the level is absent
	// (allowed for caudales muy pequeños and miner's water); false makes a
	// missing level invalid. Default false; true for the built-in
	// dga-subterraneas. UNCONFIRMED which obras may use it.
	EmptyLevel bool `json:"empty_level"`
	// VerifyEndpoint is the URL of the GET verification
	// (?codigoObra=&numeroComprobante=). Empty: the source's endpoint.
	VerifyEndpoint string `json:"verify_endpoint"`
}

// DefaultDGASettings returns the defaults of every dga-mee setting.
func DefaultDGASettings() DGASettings {
	return DGASettings{
		TimeStampOrigen: StampEmeltec3, Decimals: 2, Totalizer: TotalizerTruncate,
		MissingFlow: MissingFlowInvalid,
	}
}

// DGASettings decodes the source's settings over DefaultDGASettings and
// checks them.
func (s Source) DGASettings() (DGASettings, error) {
	st := DefaultDGASettings()
	if err := decodeSettings(s.Settings, &st); err != nil {
		return st, err
	}
	switch st.TimeStampOrigen {
	case StampEmeltec3, StampMeasurementLocal, StampOffset:
	default:
		return st, fmt.Errorf("time_stamp_origen: must be %s, %s or %s; got %q",
			StampEmeltec3, StampMeasurementLocal, StampOffset, st.TimeStampOrigen)
	}
	if err := checkNumbers(st.Decimals, st.Totalizer); err != nil {
		return st, err
	}
	switch st.MissingFlow {
	case MissingFlowInvalid, MissingFlowNull:
	default:
		return st, fmt.Errorf("missing_flow: must be %s or %s; got %q", MissingFlowInvalid, MissingFlowNull, st.MissingFlow)
	}
	return st, nil
}

// SMAParameter maps a canonical variable to an SMA parameter.
type SMAParameter struct {
	Variable string `json:"variable"` // flow, totalizer, level
	Name     string `json:"nombre"`   // SMA parameter code, e.g. "Q"
	Unit     string `json:"unidad"`   // e.g. "l/s"
}

// SMASettings are the settings of an sma-registros source (Source.Settings,
// JSON). A key absent from the JSON keeps its default (DefaultSMASettings).
type SMASettings struct {
	// Parameters map variables to SMA parameter codes and units. Default
	// flow -> Q (l/s), totalizer -> VA (m3): UNCONFIRMED (one
	// implementation; the manual's annexes were not available).
	Parameters []SMAParameter `json:"parameters"`
	// Decimals of non-totalizer values. Default 2.
	Decimals int `json:"decimals"`
	// Totalizer is truncate (default) or round.
	Totalizer string `json:"totalizer"`
	// AuthPath is appended to the endpoint for the token. Default "/auth".
	AuthPath string `json:"auth_path"`
	// TokenTTL is how long a token is valid (the manual says 24 h) and
	// TokenMargin how long before that it is renewed. Defaults "24h", "10m".
	// A JWT's own exp claim wins when it is earlier.
	TokenTTL    string `json:"token_ttl"`
	TokenMargin string `json:"token_margin"`
}

// DefaultSMASettings returns the defaults of every sma-registros setting.
func DefaultSMASettings() SMASettings {
	return SMASettings{
		Parameters: []SMAParameter{
			{Variable: VarFlow, Name: "Q", Unit: "l/s"},
			{Variable: VarTotalizer, Name: "VA", Unit: "m3"},
		},
		Decimals: 2, Totalizer: TotalizerTruncate, AuthPath: "/auth",
		TokenTTL: "24h", TokenMargin: "10m",
	}
}

// SMASettings decodes the source's settings over DefaultSMASettings and
// checks them.
func (s Source) SMASettings() (SMASettings, error) {
	st := DefaultSMASettings()
	if err := decodeSettings(s.Settings, &st); err != nil {
		return st, err
	}
	if err := checkNumbers(st.Decimals, st.Totalizer); err != nil {
		return st, err
	}
	for i, p := range st.Parameters {
		if p.Variable == "" || p.Name == "" {
			return st, fmt.Errorf("parameters[%d]: variable and nombre are required", i)
		}
	}
	if _, _, err := st.tokenLife(); err != nil {
		return st, err
	}
	return st, nil
}

func (st SMASettings) parameter(variable string) (SMAParameter, bool) {
	for _, p := range st.Parameters {
		if p.Variable == variable {
			return p, true
		}
	}
	return SMAParameter{}, false
}

func (st SMASettings) tokenLife() (ttl, margin time.Duration, err error) {
	if ttl, err = time.ParseDuration(st.TokenTTL); err != nil || ttl <= 0 {
		return 0, 0, fmt.Errorf("token_ttl: must be a positive duration; got %q", st.TokenTTL)
	}
	if margin, err = time.ParseDuration(st.TokenMargin); err != nil || margin < 0 || margin >= ttl {
		return 0, 0, fmt.Errorf("token_margin: must be a duration shorter than token_ttl; got %q", st.TokenMargin)
	}
	return ttl, margin, nil
}

func checkNumbers(decimals int, totalizer string) error {
	if decimals < 0 || decimals > 6 {
		return fmt.Errorf("decimals: must be between 0 and 6; got %d", decimals)
	}
	if totalizer != TotalizerTruncate && totalizer != TotalizerRound {
		return fmt.Errorf("totalizer: must be %s or %s; got %q", TotalizerTruncate, TotalizerRound, totalizer)
	}
	return nil
}

// decodeSettings decodes raw over v strictly: an unknown key is an error.
func decodeSettings(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding settings: %w", err)
	}
	return nil
}
