package compliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Values are the readings of one slot in canonical units: flow L/s,
// totalizer m3, level m. Nil is absent.
type Values struct {
	Flow, Totalizer, Level *float64
}

// A Slot is one instant of one config to report: the values, the config's
// params and its opened credentials. ID is compliance_submissions.id.
type Slot struct {
	ID          int64
	Point       string
	At          time.Time
	Values      Values
	Params      Params
	Credentials Credentials
}

// LogValue keeps slog to what identifies the slot (never credentials).
func (s Slot) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("id", s.ID), slog.String("point", s.Point), slog.Time("at", s.At))
}

// A Request is a prepared regulator request. Body holds secrets (DGA's
// password); Redacted is the body with them replaced by "****", for the
// audit (compliance_attempts.request) and logs. Header never holds
// secrets (SMA's bearer token is added by Send).
type Request struct {
	Method, URL string
	Header      http.Header
	Body        []byte
	Redacted    json.RawMessage
}

// String shows the request without its body.
func (r Request) String() string { return r.Method + " " + r.URL }

// LogValue keeps slog to the method, URL and redacted body.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("method", r.Method), slog.String("url", r.URL),
		slog.String("body", string(r.Redacted)))
}

// OutcomeKind classifies a regulator's answer.
type OutcomeKind string

// Outcome kinds. The submitter maps them to submission states: confirmed
// -> CONFIRMED, rejected -> REJECTED (retried after RetryRejectedAfter,
// up to MaxAttempts), rejected_terminal -> REJECTED for good, unknown ->
// SENT (the data may have arrived; do not blindly resend), transient ->
// ERROR (retry with backoff), rate_limited -> retry after RetryAfter,
// invalid -> REJECTED locally (never sent).
const (
	Confirmed        OutcomeKind = "confirmed"
	Rejected         OutcomeKind = "rejected"
	RejectedTerminal OutcomeKind = "rejected_terminal"
	Unknown          OutcomeKind = "unknown"
	Transient        OutcomeKind = "transient"
	RateLimited      OutcomeKind = "rate_limited"
	Invalid          OutcomeKind = "invalid"
)

// An Outcome is what one request achieved. Receipt is the regulator's
// proof of filing (DGA numeroComprobante, SMA IdVerificacion); a confirmed
// outcome without one has a Reason saying it needs review. Response holds
// the raw response body, at most MaxResponseBytes.
type Outcome struct {
	Kind       OutcomeKind
	Receipt    string
	Reason     string
	HTTPStatus int
	Response   []byte
	RetryAfter time.Duration
	Duration   time.Duration
}

// MaxResponseBytes caps the response body kept in an Outcome.
const MaxResponseBytes = 64 << 10

// A Protocol talks to the regulators of one protocol. Implementations are
// safe for concurrent use.
type Protocol interface {
	// Prepare formats slot for src and validates the body against
	// src.Schema; an error wrapping ErrInvalid means the slot must be
	// REJECTED locally with that reason and never sent. now is the time the
	// request is prepared (DGA's timeStampOrigen).
	Prepare(ctx context.Context, src Source, slot Slot, now time.Time) (Request, error)
	// Send performs the request (bounded by src.RequestTimeout) and
	// classifies the answer. It does not throttle: honouring
	// src.MinInterval is the caller's job.
	Send(ctx context.Context, src Source, slot Slot, req Request) Outcome
}

// A Verifier can ask the regulator whether a receipt is on file, for slots
// whose outcome was unknown or confirmed without a receipt. The outcome is
// confirmed (with the receipt) when the regulator holds it, rejected when it
// says it does not, transient when it could not be asked.
type Verifier interface {
	Verify(ctx context.Context, src Source, slot Slot, receipt string) Outcome
}

// NewProtocols returns the protocols by name ("dga-mee",
// "sma-registros"), all using client (http.DefaultClient when nil). Each
// request is bounded by its source's RequestTimeout, so client needs no
// Timeout of its own.
func NewProtocols(client *http.Client) map[string]Protocol {
	if client == nil {
		client = http.DefaultClient
	}
	return map[string]Protocol{
		ProtocolDGA: newDGA(client),
		ProtocolSMA: newSMA(client, time.Now),
	}
}

// locations caches loaded time zones. Safe for concurrent use.
type locations struct{ m sync.Map }

func (l *locations) get(src Source) (*time.Location, error) {
	if v, ok := l.m.Load(src.TimeZone); ok {
		return v.(*time.Location), nil
	}
	loc, err := src.Location()
	if err != nil {
		return nil, err
	}
	l.m.Store(src.TimeZone, loc)
	return loc, nil
}

// forSlot is what every Prepare starts with once it has its source's
// settings: the zone of src and the params of slot, normalized and
// validated for src.
func (l *locations) forSlot(src Source, slot Slot) (*time.Location, Params, error) {
	loc, err := l.get(src)
	if err != nil {
		return nil, Params{}, err
	}
	params := slot.Params.Normalized()
	if err := params.Validate(src); err != nil {
		return nil, Params{}, err
	}
	return loc, params, nil
}

// exchange is one HTTP round trip, as far as it got.
type exchange struct {
	status   int
	header   http.Header
	body     []byte
	err      error // a failure to get a response
	written  bool  // the request was fully written before err
	duration time.Duration
}

// do performs one request bounded by timeout, recording whether it was
// written before any failure and keeping at most MaxResponseBytes of the
// response body.
func do(ctx context.Context, client *http.Client, timeout time.Duration, method, url string, header http.Header, body []byte) exchange {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var written atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				written.Store(true)
			}
		},
	})
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return exchange{err: fmt.Errorf("building request: %w", err), duration: time.Since(start)}
	}
	for k, vs := range header {
		req.Header[k] = append([]string(nil), vs...)
	}
	resp, err := client.Do(req)
	if err != nil {
		return exchange{err: err, written: written.Load(), duration: time.Since(start)}
	}
	defer resp.Body.Close()
	// The status arrived, so the request did: a body cut short (or past the
	// cap) still leaves the status to classify on.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	return exchange{status: resp.StatusCode, header: resp.Header, body: b, duration: time.Since(start)}
}

// failure classifies a request that got no response: before the request
// was written nothing reached the regulator (transient); after, the data may
// have arrived (unknown).
func failure(ex exchange) Outcome {
	o := Outcome{Duration: ex.duration}
	var ne net.Error
	timeout := errors.Is(ex.err, context.DeadlineExceeded) || (errors.As(ex.err, &ne) && ne.Timeout())
	switch {
	case !ex.written:
		o.Kind = Transient
		o.Reason = "request not sent: " + ex.err.Error()
	case timeout:
		o.Kind = Unknown
		o.Reason = "no answer before the timeout after the request was sent; the data may have arrived: " + ex.err.Error()
	default:
		o.Kind = Unknown
		o.Reason = "connection failed after the request was sent; the data may have arrived: " + ex.err.Error()
	}
	return o
}

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// snippet returns the start of a body for a reason.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
