package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
)

// decodeBody reads r's JSON body into dst: one object, at most maxBody
// bytes, no unknown fields. Failures name the field at fault, or "body".
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != MediaJSON {
			return &Error{Status: http.StatusUnsupportedMediaType, Param: "Content-Type",
				Message: "send the body as application/json"}
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Param: "body", Message: "the body is larger than 64 KiB"}
	case err != nil:
		return badParam("body", "reading the body: %v", err)
	case len(bytes.TrimSpace(raw)) == 0:
		return badParam("body", "empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badParam("body", "unexpected data after the JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a 400 naming the field.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badParam("body", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badParam("body", "want a JSON object")
		}
		return badParam(field, "want a %s, not a JSON %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badParam("body", "truncated JSON")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badParam(printable(strings.Trim(name, `"`)), "unknown field")
	}
	return badParam("body", "invalid JSON: %v", err)
}

func jsonKind(k string) string {
	switch k {
	case "float64", "float32", "int", "int64", "int32":
		return "number"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return k
}

// optional is a PATCH field: set when the field was present, null when it
// was JSON null.
type optional[T any] struct {
	set, null bool
	v         T
}

// UnmarshalJSON implements json.Unmarshaler.
func (o *optional[T]) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.null = true
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

// value returns the new value of a non-nullable field: ok is false when the
// field is absent; null is a 400 naming it.
func (o optional[T]) value(field string) (T, bool, error) {
	if o.null {
		var zero T
		return zero, false, badParam(field, "may not be null")
	}
	return o.v, o.set, nil
}

// jsonCall checks what every JSON-only call shares, in this order: it
// answers JSON, names its path parameter (pathKey; "" for none), takes no
// query parameters and, when body is not nil, decodes the JSON body into
// it. It returns the path parameter's value.
func jsonCall(w http.ResponseWriter, r *http.Request, pathKey string, body any) (string, error) {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return "", err
	}
	var v string
	if pathKey != "" {
		var err error
		if v, err = pathParam(r, pathKey); err != nil {
			return "", err
		}
	}
	return v, noParamsBody(w, r, body)
}

// jsonIDCall is jsonCall for a path parameter "id" that is a positive
// integer: badID is the message of the 400 when it is not (pathID).
func jsonIDCall(w http.ResponseWriter, r *http.Request, badID string, body any) (int64, error) {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return 0, err
	}
	id, err := pathID(r, "id", badID)
	if err != nil {
		return 0, err
	}
	return id, noParamsBody(w, r, body)
}

// noParamsBody is the end of jsonCall: no query parameters and, when body
// is not nil, the JSON body decoded into it.
func noParamsBody(w http.ResponseWriter, r *http.Request, body any) error {
	if err := noParams(r); err != nil {
		return err
	}
	if body != nil {
		return decodeBody(w, r, body)
	}
	return nil
}

// jsonParams is what a JSON-only call with query parameters shares: it
// answers JSON and parses the query string as parseParams does.
func jsonParams(r *http.Request, known []string, multi ...string) (params, error) {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return params{}, err
	}
	return parseParams(r, known, multi...)
}

// writeList answers 200 with the list {"results": [...]} of each of xs
// shown by show.
func writeList[S, T any](w http.ResponseWriter, xs []S, show func(S) T) {
	out := listJSON[T]{Results: make([]T, len(xs))}
	for i, x := range xs {
		out.Results[i] = show(x)
	}
	writeJSON(w, http.StatusOK, out)
}
