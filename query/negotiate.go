package query

import (
	"net/http"
	"strconv"
	"strings"
)

// Media types of the API's output.
const (
	MediaJSON  = "application/json"
	MediaCSV   = "text/csv"
	MediaArrow = "application/vnd.apache.arrow.stream"
)

// tabular are the formats of the data endpoints, in the server's order of
// preference when the client's Accept ranks several equally.
var tabular = []string{MediaJSON, MediaCSV, MediaArrow}

// jsonOnly is the format of every other endpoint.
var jsonOnly = []string{MediaJSON}

// negotiate picks the response format among offers from the request's
// Accept header (RFC 9110 §12.5.1): each offer takes the quality of the most
// specific media range that matches it, the best quality wins, ties go to
// the earlier offer. No Accept header means the first offer. Nothing
// acceptable is a 406 naming Accept.
func negotiate(r *http.Request, offers []string) (string, error) {
	header := strings.Join(r.Header.Values("Accept"), ",")
	if strings.TrimSpace(header) == "" {
		return offers[0], nil
	}
	ranges, ok := parseAccept(header)
	if ok {
		best, bestQ := "", 0.0
		for _, o := range offers {
			if q := quality(ranges, o); q > bestQ {
				best, bestQ = o, q
			}
		}
		if best != "" {
			return best, nil
		}
	}
	return "", &Error{Status: http.StatusNotAcceptable, Param: "Accept",
		Message: "cannot answer in " + printable(header) + "; this endpoint answers " + strings.Join(offers, ", ")}
}

// mediaRange is one element of an Accept header.
type mediaRange struct {
	typ, sub string
	q        float64
}

// parseAccept parses an Accept header; false when it is malformed.
func parseAccept(h string) ([]mediaRange, bool) {
	var out []mediaRange
	for part := range strings.SplitSeq(h, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		fields := strings.Split(part, ";")
		typ, sub, ok := strings.Cut(strings.ToLower(strings.TrimSpace(fields[0])), "/")
		if !ok || typ == "" || sub == "" || (typ == "*" && sub != "*") {
			return nil, false
		}
		mr := mediaRange{typ: typ, sub: sub, q: 1}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil || q < 0 || q > 1 {
					return nil, false
				}
				mr.q = q
			}
		}
		out = append(out, mr)
	}
	return out, true
}

// quality returns the quality the ranges give the media type offer: that
// of the most specific matching range, 0 when none matches.
func quality(ranges []mediaRange, offer string) float64 {
	typ, sub, _ := strings.Cut(offer, "/")
	best, spec := 0.0, -1
	for _, mr := range ranges {
		s := -1
		switch {
		case mr.typ == typ && mr.sub == sub:
			s = 2
		case mr.typ == typ && mr.sub == "*":
			s = 1
		case mr.typ == "*" && mr.sub == "*":
			s = 0
		}
		if s > spec {
			best, spec = mr.q, s
		}
	}
	return best
}
