package query

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's own metrics; the access log is the HTTP server's.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ingests  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "stackvps", Subsystem: "api", Name: "requests_total",
			Help: "API requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "stackvps", Subsystem: "api", Name: "request_duration_seconds",
			Help:    "Time to the end of the response of API requests, by method and route pattern.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "route"}),
		ingests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "stackvps", Subsystem: "api", Name: "ingested_payloads_total",
			Help: "Payloads of POST /api/telemetry/process/ handed to Kafka, by result (accepted, failed).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.ingests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.ingests.WithLabelValues("accepted")
	m.ingests.WithLabelValues("failed")
	return m, nil
}

// observe counts and times every request by its route pattern (never its
// path, which would make a label per point).
func (a *API) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now()
		defer func() {
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" && rc.RoutePattern() != "/api/*" {
				route = rc.RoutePattern()
			}
			method := r.Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
			default:
				method = "other" // any token is a method: keep the label bounded
			}
			a.met.requests.WithLabelValues(method, route, strconv.Itoa(ww.Status())).Inc()
			a.met.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(ww, r)
	})
}
