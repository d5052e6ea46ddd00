package query

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/pipeline"
)

// Headers of telemetry.raw records (contract); the MQTT bridge writes the
// same.
const (
	headerMQTTTopic  = "mqtt-topic"
	headerReceivedAt = "received-at"
	headerProvider   = "provider"
)

// Request headers that may name the device and the provider of an ingested
// payload instead of the query parameters.
const (
	HeaderDevice   = "X-Device"
	HeaderProvider = "X-Provider"
)

// processTopicPrefix starts the mqtt-topic header of HTTP-ingested records:
// http:/api/telemetry/process/<provider>/<device>.
const processTopicPrefix = "http:/api/telemetry/process/"

// acceptedJSON is the answer to an ingested payload.
type acceptedJSON struct {
	Status     string    `json:"status"`
	Device     string    `json:"device"`
	Point      string    `json:"point"`
	Provider   string    `json:"provider"`
	Bytes      int       `json:"bytes"`
	ReceivedAt time.Time `json:"received_at"`
}

// ingestParam returns the value of a parameter that the query string or a
// header may give; both, differing, is an error.
func ingestParam(p params, r *http.Request, name, header string) (string, error) {
	q, h := p.get(name), r.Header.Get(header)
	if p.has(name) && h != "" && q != h {
		return "", badParam(name, "the query parameter and the %s header differ", header)
	}
	if q == "" {
		q = h
	}
	return q, nil
}

// handleProcess serves POST /api/telemetry/process/: the body is a
// provider's payload, written unchanged to telemetry.raw as the MQTT bridge
// would, keyed by the device. It answers 202 only once Kafka acknowledged
// the record.
func (a *API) handleProcess(w http.ResponseWriter, r *http.Request) error {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return err
	}
	p, err := parseParams(r, []string{"provider", "device"})
	if err != nil {
		return err
	}
	id, err := ingestParam(p, r, "device", HeaderDevice)
	if err != nil {
		return err
	}
	if id == "" {
		return badParam("device", "required: the device id, as the query parameter device or the %s header", HeaderDevice)
	}
	if err := checkIdent("device", id); err != nil {
		return err
	}
	provider, err := ingestParam(p, r, "provider", HeaderProvider)
	if err != nil {
		return err
	}
	if err := checkProvider(provider); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxPayload))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Param: "body", Message: "the payload is larger than the limit", Err: err}
	case err != nil:
		return badParam("body", "reading the payload: %v", err)
	case len(body) == 0:
		return badParam("body", "empty: send the provider's payload as the body")
	}

	d, err := a.store.device(r.Context(), id)
	if errors.Is(err, errNoDevice) {
		return deviceNotFound(id, "device")
	}
	if err != nil {
		return err
	}
	if err := a.acc.Can(r.Context(), principal(r), d.Point, accounts.PermWrite); err != nil {
		if errors.Is(err, accounts.ErrNotFound) {
			return deviceNotFound(id, "device")
		}
		return fromAccounts(err, "device")
	}
	if provider == "" {
		provider = d.Provider
	}
	if provider == "" {
		provider = a.cfg.DefaultProvider
	}
	if provider == "" {
		return badParam("provider", "required: the device has no provider registered; name one (provider or the %s header)", HeaderProvider)
	}
	if a.deps.Providers != nil {
		if _, err := a.deps.Providers.Lookup(provider); err != nil {
			return badParam("provider", "unknown provider %q", provider)
		}
	}

	if !a.beginIngest() {
		return &Error{Status: http.StatusServiceUnavailable, Message: "shutting down; retry",
			Header: http.Header{"Retry-After": {"5"}}}
	}
	defer a.inflight.Done()
	received := a.now().UTC()
	rec := pipeline.Record{
		Topic: a.cfg.RawTopic,
		Key:   []byte(id),
		Value: body,
		Time:  received,
		Headers: []pipeline.Header{
			{Key: headerMQTTTopic, Value: []byte(processTopicPrefix + provider + "/" + id)},
			{Key: headerReceivedAt, Value: []byte(received.Format(time.RFC3339Nano))},
			{Key: headerProvider, Value: []byte(provider)},
		},
	}
	// A record handed to Kafka is driven to an answer even if the client
	// goes away, so that the log tells what became of it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.cfg.IngestTimeout)
	defer cancel()
	acked := make(chan error, 1)
	a.deps.Producer.Produce(ctx, rec, func(err error) { acked <- err })
	if err := <-acked; err != nil {
		a.met.ingests.WithLabelValues("failed").Inc()
		if errors.Is(err, pipeline.ErrRecordTooLarge) {
			return &Error{Status: http.StatusRequestEntityTooLarge, Param: "body", Message: "the payload is too large for Kafka", Err: err}
		}
		return &Error{Status: http.StatusServiceUnavailable, Message: "Kafka did not acknowledge the payload; retry",
			Header: http.Header{"Retry-After": {"5"}}, Err: err}
	}
	a.met.ingests.WithLabelValues("accepted").Inc()
	writeJSON(w, http.StatusAccepted, acceptedJSON{Status: "accepted", Device: id, Point: d.Point, Provider: provider,
		Bytes: len(body), ReceivedAt: received})
	return nil
}
