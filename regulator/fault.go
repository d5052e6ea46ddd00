package regulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// FaultKind names one way the regulator misbehaves on purpose.
type FaultKind string

// The fault kinds. "Before accepting" means nothing is stored; "after
// accepting" means the request is processed normally (a valid new slot is
// stored and counted) and only the answer misbehaves.
const (
	// FaultServerError answers Status (default 503) before accepting.
	FaultServerError FaultKind = "server_error"
	// FaultRateLimit answers 429 with a Retry-After of RetryAfter (default
	// 1s, rounded up to whole seconds) before accepting.
	FaultRateLimit FaultKind = "rate_limit"
	// FaultSlow processes the request, then waits Delay before answering.
	// A client whose timeout is shorter sees a timeout although the data
	// was stored.
	FaultSlow FaultKind = "slow"
	// FaultHang processes the request, then never answers: the handler
	// waits until the client gives up, the Server is closed or Delay (when
	// set) passes, and then drops the connection without a response (by
	// panicking with http.ErrAbortHandler, so it needs a real http.Server,
	// not an httptest.ResponseRecorder).
	FaultHang FaultKind = "hang"
	// FaultTokenExpiry expires every SMA token when it fires; the request
	// carrying one then answers 401 like any request with an expired token.
	FaultTokenExpiry FaultKind = "token_expiry"
	// FaultDuplicate answers a valid submission as a duplicate: DGA 400
	// "Ya existe un registro ... Comprobante: X", SMA 200 with the
	// IdVerificacion. When the slot was not stored yet it is stored first,
	// as if an earlier attempt had been accepted and its answer lost, so X
	// is a real receipt that the verify endpoint knows.
	FaultDuplicate FaultKind = "duplicate"
	// FaultWrongInformant rejects a valid submission as if the credentials
	// did not match the obra: DGA 400 "Usuario no es el informante
	// registrado en la Obra", SMA 403.
	FaultWrongInformant FaultKind = "wrong_informant"
	// FaultNoReceipt accepts a valid submission but leaves the receipt out
	// of the answer: DGA 200 status "00" without data.numeroComprobante,
	// SMA 201 without IdVerificacion.
	FaultNoReceipt FaultKind = "no_receipt"
	// FaultReject rejects a valid submission with a business error: HTTP
	// Status (default 400), DGA status "01", and Message (default
	// "Registro rechazado").
	FaultReject FaultKind = "reject"
)

var faultKinds = map[FaultKind]bool{
	FaultServerError: true, FaultRateLimit: true, FaultSlow: true, FaultHang: true,
	FaultTokenExpiry: true, FaultDuplicate: true, FaultWrongInformant: true,
	FaultNoReceipt: true, FaultReject: true,
}

// submissionOnly are the kinds that only make sense for a submission.
var submissionOnly = map[FaultKind]bool{
	FaultDuplicate: true, FaultWrongInformant: true, FaultNoReceipt: true, FaultReject: true,
}

// Endpoint names a group of the regulator's endpoints.
type Endpoint string

// The endpoints a fault can target and a Request is recorded under.
const (
	// EndpointDGA is both DGA submissions (subterraneas and
	// superficiales/flujometro).
	EndpointDGA Endpoint = "dga"
	// EndpointDGAVerify is the DGA GET verification.
	EndpointDGAVerify Endpoint = "dga_verify"
	// EndpointSMAAuth is SMA POST /api/v1/auth.
	EndpointSMAAuth Endpoint = "sma_auth"
	// EndpointSMA is SMA POST .../registros.
	EndpointSMA Endpoint = "sma"
	// EndpointUnknown is any other path (answered 404, but recorded).
	EndpointUnknown Endpoint = "unknown"
)

var faultEndpoints = map[Endpoint]bool{
	"": true, EndpointDGA: true, EndpointDGAVerify: true, EndpointSMAAuth: true, EndpointSMA: true,
}

// Fault is one injected misbehaviour. It fires on the requests it matches:
// those of Endpoint (empty: the DGA and SMA submissions, not auth nor
// verify) whose subject contains Match (empty: any). The subject is the slot
// key for a submission (see DGAKey, SMAKey; an SMA call naming several slots
// joins them with ","), "codigoObra|numeroComprobante" for a verification
// and the usuario for an SMA auth. Count > 0 limits it to that many firings,
// after which it is removed; Count 0 leaves it until it is cleared.
// Probability in (0, 1] makes each matching request fire with that
// probability, drawn from the Server's seeded generator; 0 fires on every
// matching request.
//
// At most one fault fires per request: the first one, in the order they
// were added, that matches and fires.
//
// In JSON the durations are strings ("1.5s") or numbers of seconds:
//
//	{"kind":"slow","endpoint":"dga","match":"OB-0602-7|","count":2,"delay":"3s"}
type Fault struct {
	Kind        FaultKind
	Endpoint    Endpoint
	Match       string
	Count       int
	Probability float64
	// Status is the HTTP status of server_error (default 503) and reject
	// (default 400).
	Status int
	// Message is the message of reject.
	Message string
	// Delay is how long slow waits (required) and the longest hang waits
	// (0: until the client leaves or the Server closes).
	Delay time.Duration
	// RetryAfter is rate_limit's Retry-After. Default 1s.
	RetryAfter time.Duration
}

// faultJSON is the wire form of Fault.
type faultJSON struct {
	Kind        FaultKind    `json:"kind"`
	Endpoint    Endpoint     `json:"endpoint,omitempty"`
	Match       string       `json:"match,omitempty"`
	Count       int          `json:"count,omitempty"`
	Probability float64      `json:"probability,omitempty"`
	Status      int          `json:"status,omitempty"`
	Message     string       `json:"message,omitempty"`
	Delay       jsonDuration `json:"delay,omitempty"`
	RetryAfter  jsonDuration `json:"retry_after,omitempty"`
}

// MarshalJSON writes the snake_case form with durations as strings.
func (f Fault) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultJSON{
		Kind: f.Kind, Endpoint: f.Endpoint, Match: f.Match, Count: f.Count, Probability: f.Probability,
		Status: f.Status, Message: f.Message, Delay: jsonDuration(f.Delay), RetryAfter: jsonDuration(f.RetryAfter),
	})
}

// UnmarshalJSON reads the snake_case form; unknown keys are errors.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("decoding a fault: %w", err)
	}
	*f = Fault{
		Kind: j.Kind, Endpoint: j.Endpoint, Match: j.Match, Count: j.Count, Probability: j.Probability,
		Status: j.Status, Message: j.Message, Delay: time.Duration(j.Delay), RetryAfter: time.Duration(j.RetryAfter),
	}
	return nil
}

// Validate reports the first problem of f, naming the field.
func (f Fault) Validate() error {
	switch {
	case !faultKinds[f.Kind]:
		return fmt.Errorf("kind: unknown fault kind %q", f.Kind)
	case !faultEndpoints[f.Endpoint]:
		return fmt.Errorf("endpoint: unknown endpoint %q (want dga, dga_verify, sma_auth or sma)", f.Endpoint)
	case submissionOnly[f.Kind] && f.Endpoint != "" && f.Endpoint != EndpointDGA && f.Endpoint != EndpointSMA:
		return fmt.Errorf("endpoint: a %s fault applies only to the submissions (dga, sma)", f.Kind)
	case f.Count < 0:
		return fmt.Errorf("count: must be >= 0; got %d", f.Count)
	case f.Probability < 0 || f.Probability > 1:
		return fmt.Errorf("probability: must be in [0, 1]; got %g", f.Probability)
	case f.Status != 0 && (f.Status < 100 || f.Status > 599):
		return fmt.Errorf("status: must be an HTTP status; got %d", f.Status)
	case f.Delay < 0:
		return fmt.Errorf("delay: must be >= 0; got %s", f.Delay)
	case f.Kind == FaultSlow && f.Delay == 0:
		return errors.New("delay: a slow fault needs a delay")
	case f.RetryAfter < 0:
		return fmt.Errorf("retry_after: must be >= 0; got %s", f.RetryAfter)
	}
	return nil
}

// applies reports whether f targets endpoint ep.
func (f Fault) applies(ep Endpoint) bool {
	if f.Endpoint == "" {
		return ep == EndpointDGA || ep == EndpointSMA
	}
	return f.Endpoint == ep
}

// ParseFaults reads one fault object or an array of them, validated.
func ParseFaults(b []byte) ([]Fault, error) {
	s := strings.TrimSpace(string(b))
	var faults []Fault
	if strings.HasPrefix(s, "{") {
		var f Fault
		if err := json.Unmarshal([]byte(s), &f); err != nil {
			return nil, err
		}
		faults = []Fault{f}
	} else if err := json.Unmarshal([]byte(s), &faults); err != nil {
		return nil, fmt.Errorf("decoding faults (want a fault object or an array of them): %w", err)
	}
	for i, f := range faults {
		if err := f.Validate(); err != nil {
			return nil, fmt.Errorf("fault %d: %w", i, err)
		}
	}
	return faults, nil
}

// FaultStatus is an active fault as the admin API lists it.
type FaultStatus struct {
	// ID identifies the fault while it is active.
	ID int64 `json:"id"`
	// Fault is the fault as added.
	Fault Fault `json:"fault"`
	// Fired is how many requests it fired on.
	Fired int `json:"fired"`
	// Remaining is how many more times it fires (-1: until cleared).
	Remaining int `json:"remaining"`
}

// activeFault is a fault and its firings so far.
type activeFault struct {
	id    int64
	f     Fault
	fired int
}

// jsonDuration is a time.Duration written as a Go duration string and read
// from one or from a number of seconds.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("parsing duration %q: %w", s, err)
		}
		*d = jsonDuration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("a duration is a string (\"1.5s\") or a number of seconds; got %s", b)
	}
	*d = jsonDuration(secs * float64(time.Second))
	return nil
}
