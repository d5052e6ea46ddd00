package regulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// AcceptedReport is the answer of GET /_admin/accepted.
type AcceptedReport struct {
	// Accepted is the sum of the slots' acceptances.
	Accepted int `json:"accepted"`
	// Requests is the sum of the slots' requests.
	Requests int `json:"requests"`
	// Slots are every slot seen, sorted by key.
	Slots []Slot `json:"slots"`
	// Violations are the slots accepted more than once.
	Violations []Slot `json:"violations"`
}

// RequestsReport is the answer of GET /_admin/requests[?since=SEQ].
type RequestsReport struct {
	// Requests are the logged requests after since, oldest first.
	Requests []Request `json:"requests"`
	// Dropped counts the entries dropped from the log (MaxRequests).
	Dropped int64 `json:"dropped"`
	// Last is the Seq of the latest request.
	Last int64 `json:"last"`
}

// FaultsReport is the answer of the /_admin/faults endpoints.
type FaultsReport struct {
	// Faults are the active faults, in firing priority.
	Faults []FaultStatus `json:"faults"`
	// Cleared is how many faults DELETE removed.
	Cleared int `json:"cleared,omitempty"`
}

// AcceptedReport returns what GET /_admin/accepted answers.
func (s *Server) AcceptedReport() AcceptedReport {
	rep := AcceptedReport{Slots: s.Slots(), Violations: []Slot{}}
	for _, sl := range rep.Slots {
		rep.Accepted += sl.Accepted
		rep.Requests += sl.Requests
		if sl.Accepted > 1 {
			rep.Violations = append(rep.Violations, sl)
		}
	}
	return rep
}

// adminRoutes adds the admin API:
//
//	GET    /_admin/healthz         200 "ok"
//	POST   /_admin/faults          body Fault or [Fault]: append; FaultsReport
//	GET    /_admin/faults          FaultsReport
//	DELETE /_admin/faults          clear; FaultsReport with cleared
//	GET    /_admin/accepted        AcceptedReport
//	GET    /_admin/requests        RequestsReport (?since=SEQ)
//	POST   /_admin/reset           forget everything (see Server.Reset)
//	POST   /_admin/obras           body {"OB-0602-7": Obra, ...}: register
//	POST   /_admin/sma-users       body {"usuario": "password", ...}: register
//	POST   /_admin/tokens/expire   expire every SMA token: {"expired": N}
//
// Errors answer 400 {"error": "..."}. Admin requests are not logged.
func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /_admin/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /_admin/faults", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			adminError(w, fmt.Errorf("reading the body: %w", err))
			return
		}
		faults, err := ParseFaults(b)
		if err != nil {
			adminError(w, err)
			return
		}
		if err := s.AddFaults(faults...); err != nil {
			adminError(w, err)
			return
		}
		s.log.Info("regulator faults added", "faults", len(faults))
		adminJSON(w, FaultsReport{Faults: s.Faults()})
	})
	mux.HandleFunc("GET /_admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		adminJSON(w, FaultsReport{Faults: s.Faults()})
	})
	mux.HandleFunc("DELETE /_admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		n := s.ClearFaults()
		s.log.Info("regulator faults cleared", "faults", n)
		adminJSON(w, FaultsReport{Faults: s.Faults(), Cleared: n})
	})
	mux.HandleFunc("GET /_admin/accepted", func(w http.ResponseWriter, _ *http.Request) {
		adminJSON(w, s.AcceptedReport())
	})
	mux.HandleFunc("GET /_admin/requests", func(w http.ResponseWriter, r *http.Request) {
		var since int64
		if v := r.URL.Query().Get("since"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				adminError(w, fmt.Errorf("since: %w", err))
				return
			}
			since = n
		}
		reqs := s.RequestsSince(since)
		s.mu.Lock()
		rep := RequestsReport{Requests: reqs, Dropped: s.dropped, Last: s.reqSeq}
		s.mu.Unlock()
		adminJSON(w, rep)
	})
	mux.HandleFunc("POST /_admin/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		s.log.Info("regulator reset")
		adminJSON(w, map[string]bool{"reset": true})
	})
	mux.HandleFunc("POST /_admin/obras", func(w http.ResponseWriter, r *http.Request) {
		var obras map[string]Obra
		if err := decodeStrict(r, &obras); err != nil {
			adminError(w, err)
			return
		}
		for code := range obras {
			if !obraRE.MatchString(code) {
				adminError(w, fmt.Errorf("codigoObra %q does not match %s", code, obraRE))
				return
			}
		}
		for code, o := range obras {
			s.RegisterObra(code, o)
		}
		adminJSON(w, map[string]int{"registered": len(obras)})
	})
	mux.HandleFunc("POST /_admin/sma-users", func(w http.ResponseWriter, r *http.Request) {
		var users map[string]string
		if err := decodeStrict(r, &users); err != nil {
			adminError(w, err)
			return
		}
		for u, p := range users {
			s.RegisterSMAUser(u, p)
		}
		adminJSON(w, map[string]int{"registered": len(users)})
	})
	mux.HandleFunc("POST /_admin/tokens/expire", func(w http.ResponseWriter, _ *http.Request) {
		adminJSON(w, map[string]int{"expired": s.ExpireTokens()})
	})
}

func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding the body: %w", err)
	}
	return nil
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
