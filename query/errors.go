package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/pipeline"
)

// Error is an error answered to the client: its status, and a JSON body
// {"error": Message, "param": Param} naming the parameter at fault when one
// is. Handlers return it; anything else is a 500 whose cause is logged, not
// shown.
type Error struct {
	Status  int
	Message string
	// Param names the query parameter, path parameter, header or body
	// field at fault ("point", "from", "Accept", "body"); empty when none.
	Param string
	// Header are extra response headers (WWW-Authenticate, Retry-After).
	Header http.Header
	// Err is the cause, for the log; it is never shown to the client.
	Err error
}

// Error returns the status, the parameter and the message.
func (e *Error) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Param, e.Message)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// errorBody is the JSON body of every error.
type errorBody struct {
	Error string `json:"error"`
	Param string `json:"param,omitempty"`
}

// badParam is a 400 naming param.
func badParam(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// fromAccounts turns the accounts package's sentinels into client errors
// about param: not found (also for what the principal may not see) 404,
// forbidden 403, invalid 422, conflict 409, unauthenticated 401. Other
// errors are returned as they are (500).
func fromAccounts(err error, param string) error {
	var status int
	switch {
	case err == nil:
		return nil
	case errors.Is(err, accounts.ErrUnauthenticated):
		return unauthenticated(err)
	case errors.Is(err, accounts.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, accounts.ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, accounts.ErrInvalid):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, accounts.ErrConflict):
		status = http.StatusConflict
	default:
		return err
	}
	return &Error{Status: status, Param: param, Message: err.Error(), Err: err}
}

// unauthenticated is the one 401: it does not say whether the token was
// missing, malformed, unknown, revoked or expired.
func unauthenticated(err error) *Error {
	return &Error{
		Status:  http.StatusUnauthorized,
		Param:   "Authorization",
		Message: "authentication required: send the header Authorization: Token <key> with a valid API token",
		Header:  http.Header{"Www-Authenticate": {"Token"}},
		Err:     err,
	}
}

// handlerFunc is a handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap turns h into an http.Handler that writes h's error. An error after
// the response started (a database error in the middle of a stream) cannot
// change the status any more: the connection is aborted, so the client sees
// a truncated response rather than a complete-looking wrong one.
func (a *API) wrap(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &startWriter{ResponseWriter: w}
		err := h(sw, r)
		if err == nil {
			return
		}
		if sw.started {
			if r.Context().Err() == nil {
				a.log.Error("response aborted", "err", err, "path", r.URL.Path, "request_id", middleware.GetReqID(r.Context()))
			}
			panic(http.ErrAbortHandler)
		}
		a.writeError(w, r, err)
	}
}

// writeError writes err as a JSON error body.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, accounts.ErrUnauthenticated):
		e = unauthenticated(err)
	case errors.Is(err, pipeline.ErrRecordTooLarge):
		e = &Error{Status: http.StatusRequestEntityTooLarge, Param: "body", Message: "the payload is too large for Kafka", Err: err}
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client went away: nobody reads the answer.
		e = &Error{Status: 499, Message: "client closed the request", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		e = &Error{Status: http.StatusServiceUnavailable, Message: "the request took too long; narrow it (a shorter range, fewer points, a smaller page_size) or retry",
			Header: http.Header{"Retry-After": {"5"}}, Err: err}
	default:
		e = &Error{Status: http.StatusInternalServerError, Message: "internal error; the request id identifies it in the logs", Err: err}
	}
	if e.Status >= 500 || e.Status == 499 {
		level := a.log.Error
		if e.Status == 499 || e.Status == http.StatusServiceUnavailable {
			level = a.log.Warn
		}
		level("request failed", "status", e.Status, "err", err, "method", r.Method, "path", r.URL.Path,
			"request_id", middleware.GetReqID(r.Context()))
	} else if e.Err != nil {
		a.log.Debug("request refused", "status", e.Status, "err", e.Err, "path", r.URL.Path,
			"request_id", middleware.GetReqID(r.Context()))
	}
	for k, vs := range e.Header {
		w.Header()[k] = vs
	}
	writeJSON(w, e.Status, errorBody{Error: e.Message, Param: e.Param})
}

// writeJSON writes v as the whole response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // an API, not HTML: "<key>" stays readable
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		buf.WriteString(`{"error":"internal error encoding the response"}` + "\n")
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", MediaJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// startWriter records whether the response has started.
type startWriter struct {
	http.ResponseWriter
	started bool
}

func (s *startWriter) WriteHeader(code int) {
	s.started = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *startWriter) Write(b []byte) (int, error) {
	s.started = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush.
func (s *startWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// paramInMessage returns the parameter name of the first of the candidates
// (message prefix, parameter name) that starts the error's text after the
// sentinel's ("invalid: ", "not found: "...), or fallback. It names the body
// field of an accounts.ErrInvalid, whose text starts with the field in words
// ("invalid: kind \"x\": want well, surface or other").
func paramInMessage(err error, fallback string, candidates ...[2]string) string {
	msg := err.Error()
	for _, sentinel := range []error{accounts.ErrInvalid, accounts.ErrConflict, accounts.ErrForbidden} {
		msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
	}
	for _, c := range candidates {
		if strings.HasPrefix(msg, c[0]) {
			return c[1]
		}
	}
	return fallback
}
