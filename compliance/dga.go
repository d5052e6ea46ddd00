package compliance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// dga speaks dga-mee: one POST per measurement, the informant's password in
// the body. Safe for concurrent use.
type dga struct {
	client  *http.Client
	schemas schemaCache
	locs    locations
}

func newDGA(client *http.Client) *dga { return &dga{client: client} }

type dgaAuth struct {
	Password   string `json:"password"`
	RutEmpresa string `json:"rutEmpresa"`
	RutUsuario string `json:"rutUsuario"`
}

// Prepare builds the POST of one measurement: headers codigoObra,
// timeStampOrigen and Content-Type; body {"autenticacion":{...},
// "<body_key>":{caudal, fechaMedicion, horaMedicion, totalizador
// [, nivelFreaticoDelPozo]}} with the variables the source takes.
func (p *dga) Prepare(_ context.Context, src Source, slot Slot, now time.Time) (Request, error) {
	st, err := src.DGASettings()
	if err != nil {
		return Request{}, fmt.Errorf("source %s: %w", src.Code, err)
	}
	loc, params, err := p.locs.forSlot(src, slot)
	if err != nil {
		return Request{}, err
	}
	if slot.Credentials.Password == "" {
		return Request{}, invalidf("credentials: the informant's password is empty")
	}
	m, err := p.measurement(src, st, slot, loc)
	if err != nil {
		return Request{}, err
	}
	auth := dgaAuth{Password: slot.Credentials.Password, RutEmpresa: params.CompanyRUT, RutUsuario: params.InformantRUT}
	body, err := json.Marshal(map[string]any{"autenticacion": auth, st.BodyKey: m})
	if err != nil {
		return Request{}, fmt.Errorf("encoding the body: %w", err)
	}
	if err := p.schemas.validateBody(src, body); err != nil {
		return Request{}, err
	}
	auth.Password = redactedPassword
	redacted, err := json.Marshal(map[string]any{"autenticacion": auth, st.BodyKey: m})
	if err != nil {
		return Request{}, fmt.Errorf("encoding the redacted body: %w", err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("codigoObra", params.WorkCode)
	h.Set("timeStampOrigen", FormatTimeStampOrigen(st.TimeStampOrigen, now, slot.At, loc))
	return Request{Method: http.MethodPost, URL: src.Endpoint, Header: h, Body: body, Redacted: redacted}, nil
}

// measurement formats the values of slot for the body.
func (p *dga) measurement(src Source, st DGASettings, slot Slot, loc *time.Location) (map[string]any, error) {
	date, clock := FormatMeasurementDate(slot.At, loc)
	m := map[string]any{"fechaMedicion": date, "horaMedicion": clock}
	v := slot.Values
	if src.Takes(VarFlow) {
		switch {
		case v.Flow != nil:
			s, err := FormatDecimal("caudal", *v.Flow, st.Decimals)
			if err != nil {
				return nil, err
			}
			m["caudal"] = s
		case st.MissingFlow == MissingFlowNull:
			m["caudal"] = nil
		default:
			return nil, invalidf("caudal: no flow value for the slot")
		}
	}
	if src.Takes(VarTotalizer) {
		if v.Totalizer == nil {
			return nil, invalidf("totalizador: no totalizer value for the slot")
		}
		s, err := FormatTotalizer("totalizador", *v.Totalizer, st.Totalizer)
		if err != nil {
			return nil, err
		}
		m["totalizador"] = s
	}
	if src.Takes(VarLevel) {
		switch {
		case v.Level != nil:
			s, err := FormatDecimal("nivelFreaticoDelPozo", *v.Level, st.Decimals)
			if err != nil {
				return nil, err
			}
			m["nivelFreaticoDelPozo"] = s
		case st.EmptyLevel:
			m["nivelFreaticoDelPozo"] = ""
		default:
			return nil, invalidf("nivelFreaticoDelPozo: no level value for the slot, and source %s does not allow it empty", src.Code)
		}
	}
	return m, nil
}

// Send posts req and classifies the answer with ClassifyDGA; a request that
// got no answer is transient when it was not written, unknown when it was.
func (p *dga) Send(ctx context.Context, src Source, _ Slot, req Request) Outcome {
	ex := do(ctx, p.client, src.RequestTimeout, req.Method, req.URL, req.Header, req.Body)
	if ex.err != nil {
		return failure(ex)
	}
	o := ClassifyDGA(ex.status, ex.header, ex.body)
	o.Duration = ex.duration
	return o
}

// Verify asks DGA (GET verify_endpoint?codigoObra=&numeroComprobante=)
// whether receipt is on file for the slot's obra: confirmed when the answer
// is status "00" with data, rejected when the status is another, transient
// when DGA could not be asked (a GET is safe to repeat).
func (p *dga) Verify(ctx context.Context, src Source, slot Slot, receipt string) Outcome {
	st, err := src.DGASettings()
	if err != nil {
		return Outcome{Kind: Transient, Reason: fmt.Sprintf("source %s: %v", src.Code, err)}
	}
	endpoint := st.VerifyEndpoint
	if endpoint == "" {
		endpoint = src.Endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return Outcome{Kind: Transient, Reason: fmt.Sprintf("verify endpoint %q: %v", endpoint, err)}
	}
	q := u.Query()
	q.Set("codigoObra", slot.Params.WorkCode)
	q.Set("numeroComprobante", receipt)
	u.RawQuery = q.Encode()
	h := http.Header{}
	h.Set("Accept", "application/json")
	h.Set("codigoObra", slot.Params.WorkCode)
	ex := do(ctx, p.client, src.RequestTimeout, http.MethodGet, u.String(), h, nil)
	if ex.err != nil {
		return Outcome{Kind: Transient, Reason: "verification not answered: " + ex.err.Error(), Duration: ex.duration}
	}
	o := Outcome{HTTPStatus: ex.status, Response: ex.body, Duration: ex.duration}
	var r dgaResponse
	jsonErr := json.Unmarshal(ex.body, &r)
	switch {
	case ex.status == http.StatusTooManyRequests:
		o.Kind, o.RetryAfter, o.Reason = RateLimited, retryAfter(ex.header, time.Now()), "verification rate limited"
	case ex.status >= 500 || jsonErr != nil:
		o.Kind, o.Reason = Transient, fmt.Sprintf("verification failed: HTTP %d: %s", ex.status, snippet(ex.body))
	case ex.status/100 == 2 && r.Status == "00" && len(r.Data) > 0 && string(r.Data) != "null":
		o.Kind, o.Receipt = Confirmed, receipt
	default:
		o.Kind, o.Reason = Rejected, fmt.Sprintf("DGA does not confirm comprobante %s: HTTP %d status %q: %s", receipt, ex.status, r.Status, r.Message)
	}
	return o
}

// dgaResponse is DGA's answer: {"status":"00","message":"…","data":{…}}.
type dgaResponse struct {
	Status  string          `json:"status"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

var (
	dgaReceiptRE   = regexp.MustCompile(`(?i)comprobante:\s*([A-Za-z0-9]+)`)
	dgaDuplicateRE = regexp.MustCompile(`(?i)ya\s+existe`)
	dgaInformantRE = regexp.MustCompile(`(?i)no\s+es\s+el\s+informante`)
)

// ClassifyDGA classifies one answer of a dga-mee POST (Manual Técnico DGA
// 1/2025 as emeltec3 and SmartHydro read it):
//   - 429: rate_limited, RetryAfter from the header;
//   - 5xx: transient;
//   - 2xx with status "00" and data.numeroComprobante: confirmed with it;
//     without it: confirmed with an empty receipt and a reason asking for
//     review (never resend);
//   - "Ya existe un registro … Comprobante: X" (any 2xx/4xx): confirmed
//     with X (without X: confirmed, needs review);
//   - "Usuario no es el informante registrado en la Obra": rejected_terminal;
//   - anything else (a 2xx with another status, a 4xx, an unexpected
//     status): rejected with DGA's message.
//
// Response is body (the caller caps it).
func ClassifyDGA(status int, header http.Header, body []byte) Outcome {
	o := Outcome{HTTPStatus: status, Response: body}
	switch {
	case status == http.StatusTooManyRequests:
		o.Kind, o.RetryAfter = RateLimited, retryAfter(header, time.Now())
		o.Reason = "DGA answered 429 Too Many Requests"
		return o
	case status >= 500:
		o.Kind, o.Reason = Transient, fmt.Sprintf("DGA answered HTTP %d: %s", status, snippet(body))
		return o
	}
	var r dgaResponse
	if err := json.Unmarshal(body, &r); err != nil {
		r = dgaResponse{Message: string(body)}
	}
	message := strings.TrimSpace(r.Message)
	if dgaDuplicateRE.MatchString(message) {
		o.Kind = Confirmed
		if m := dgaReceiptRE.FindStringSubmatch(message); m != nil {
			o.Receipt, o.Reason = m[1], "duplicate: DGA already holds this measurement"
		} else {
			o.Reason = "duplicate without a comprobante: DGA already holds this measurement; needs review: " + snippet([]byte(message))
		}
		return o
	}
	if dgaInformantRE.MatchString(message) {
		o.Kind, o.Reason = RejectedTerminal, "informant mismatch: "+snippet([]byte(message))
		return o
	}
	if status/100 == 2 && r.Status == "00" {
		o.Kind = Confirmed
		var d struct {
			Receipt json.RawMessage `json:"numeroComprobante"`
		}
		if len(r.Data) > 0 && json.Unmarshal(r.Data, &d) == nil {
			var s string
			if json.Unmarshal(d.Receipt, &s) == nil {
				o.Receipt = strings.TrimSpace(s)
			} else if len(d.Receipt) > 0 && string(d.Receipt) != "null" {
				o.Receipt = strings.Trim(string(d.Receipt), `"`)
			}
		}
		if o.Receipt == "" {
			o.Reason = "accepted (status 00) without numeroComprobante: needs manual review; do not resend"
		}
		return o
	}
	o.Kind = Rejected
	switch {
	case status/100 == 2:
		o.Reason = fmt.Sprintf("DGA rejected: status %q: %s", r.Status, snippet([]byte(message)))
	case message != "":
		o.Reason = fmt.Sprintf("DGA rejected: HTTP %d: %s", status, snippet([]byte(message)))
	default:
		o.Reason = fmt.Sprintf("DGA rejected: HTTP %d: %s", status, snippet(body))
	}
	return o
}
