package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
)

// Defaults of the Config fields that have no key in the configuration file.
const (
	// DefaultQueryTimeout bounds one data request's database work.
	DefaultQueryTimeout = time.Minute
	// DefaultIngestTimeout bounds waiting for Kafka to acknowledge an
	// ingested payload.
	DefaultIngestTimeout = 30 * time.Second
	// DefaultMaxPayload bounds an ingested payload: Kafka's default
	// message.max.bytes, less room for the key and headers.
	DefaultMaxPayload = 1000 * 1000
	// DefaultDrainTimeout bounds waiting for ingests in flight at shutdown.
	DefaultDrainTimeout = 10 * time.Second
)

// Config configures the API. The zero values of the fields without a key in
// the configuration file take their Default… constant.
type Config struct {
	// API is the api section: max_range (raw data), default_page_size and
	// max_page_size.
	API config.API
	// RawTopic is telemetry.raw, where POST /api/telemetry/process/ writes.
	// Required.
	RawTopic string
	// DefaultProvider names the provider of an ingested payload when the
	// request names none and the device has none registered; the
	// normalize stage's normalize.default_provider. Empty: such a request
	// is refused.
	DefaultProvider string
	// QueryTimeout bounds the database work of one data request. Default
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// IngestTimeout bounds waiting for Kafka's acknowledgement of one
	// ingested payload. Default DefaultIngestTimeout.
	IngestTimeout time.Duration
	// MaxPayload bounds an ingested payload in bytes. Default
	// DefaultMaxPayload.
	MaxPayload int64
	// DrainTimeout bounds waiting for the ingests in flight when Run
	// stops. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Accounts is what the API needs of *accounts.Store: authentication,
// authorization, and the audited changes to points, devices and
// notification preferences. Its methods answer a point the principal cannot
// read with accounts.ErrNotFound, as if it did not exist.
type Accounts interface {
	Authenticate(ctx context.Context, token string) (accounts.Principal, error)
	Can(ctx context.Context, p accounts.Principal, point string, perm accounts.Permission) error
	Permissions(ctx context.Context, p accounts.Principal, point string) ([]accounts.Permission, error)
	VisiblePoints(ctx context.Context, p accounts.Principal) ([]string, error)
	Owners(ctx context.Context, p accounts.Principal, point string) ([]accounts.Owner, error)
	SetNotifications(ctx context.Context, p accounts.Principal, point string, userID int64, prefs accounts.NotificationPrefs) (accounts.NotificationPrefs, error)
	Point(ctx context.Context, p accounts.Principal, code string) (points.Point, error)
	Points(ctx context.Context, p accounts.Principal) ([]points.Point, error)
	CreatePoint(ctx context.Context, p accounts.Principal, pt points.Point) (points.Point, error)
	PatchPoint(ctx context.Context, p accounts.Principal, code string, change func(*points.Point) error) (points.Point, error)
	DeletePoint(ctx context.Context, p accounts.Principal, code string) error
	Devices(ctx context.Context, p accounts.Principal, point string) ([]points.Device, error)
	AddDevice(ctx context.Context, p accounts.Principal, d points.Device) (points.Device, error)
	PatchDevice(ctx context.Context, p accounts.Principal, id string, change func(*points.Device) error) (points.Device, error)
	RemoveDevice(ctx context.Context, p accounts.Principal, id string) error
}

// Producer is what the API needs of *pipeline.Producer: Produce calls ack
// exactly once, with nil once Kafka acknowledged the record from all
// in-sync replicas.
type Producer interface {
	Produce(ctx context.Context, r pipeline.Record, ack func(error))
}

// Providers tells the provider names the normalize stage can decode; a
// *providers.Registry.
type Providers interface {
	Lookup(name string) (providers.Decoder, error)
}

// Deps are the API's collaborators.
type Deps struct {
	// Pool reads readings, rollups and devices. Required.
	Pool *pgxpool.Pool
	// Accounts authenticates and authorizes, and makes every audited
	// change. Required.
	Accounts Accounts
	// Producer writes ingested payloads to Config.RawTopic. Required.
	Producer Producer
	// Providers, when set, makes an ingest naming a provider it does not
	// know a 400 instead of a dead letter in the normalize stage.
	Providers Providers
	// Registerer receives the API's metrics. Required.
	Registerer prometheus.Registerer
	// Log is the API's logger. Required.
	Log *slog.Logger
	// Now is the clock for received-at and default time ranges; time.Now
	// when nil.
	Now func() time.Time
	// Inbox serves the caller's in-app notifications (/notifications/);
	// nil answers them 503. See NewInboxStore.
	Inbox Inbox
	// Alerts serves the alert rules and alerts (/alerts/); nil answers
	// them 503. An *alerts.Store.
	Alerts AlertStore
	// Compliance serves the compliance routes (/compliance/...), a
	// *store.Store of package compliance/store; nil answers them 503.
	Compliance ComplianceStore
}

// API is the query API. Create it with New, mount Handler under /api on the
// process's HTTP server, and run Run beside it. It is safe for concurrent
// use.
type API struct {
	cfg      Config
	deps     Deps
	acc      Accounts
	store    *store
	log      *slog.Logger
	now      func() time.Time
	met      *metrics
	limits   limits
	handler  http.Handler
	mux      *chi.Mux
	routeTab []route
	openapi  []byte

	// mu orders taking an ingest (inflight.Add) against the start of the
	// drain (draining, then inflight.Wait).
	mu       sync.Mutex
	inflight sync.WaitGroup
	draining bool
}

// New validates cfg and deps, registers the API's metrics and builds its
// router.
func New(cfg Config, deps Deps) (*API, error) {
	if deps.Pool == nil || deps.Accounts == nil || deps.Producer == nil || deps.Registerer == nil || deps.Log == nil {
		return nil, errors.New("query api: pool, accounts, producer, registerer and log are required")
	}
	if cfg.RawTopic == "" {
		return nil, errors.New("query api: the raw topic is required")
	}
	if cfg.API.MaxRange <= 0 {
		return nil, fmt.Errorf("api.max_range: must be positive; got %s", cfg.API.MaxRange)
	}
	if cfg.API.MaxPageSize <= 0 || cfg.API.DefaultPageSize <= 0 || cfg.API.DefaultPageSize > cfg.API.MaxPageSize {
		return nil, fmt.Errorf("api.default_page_size: must be between 1 and api.max_page_size (%d); got %d",
			cfg.API.MaxPageSize, cfg.API.DefaultPageSize)
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.IngestTimeout <= 0 {
		cfg.IngestTimeout = DefaultIngestTimeout
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("query api: registering metrics: %w", err)
	}
	a := &API{
		cfg: cfg, deps: deps, acc: deps.Accounts, store: &store{pool: deps.Pool},
		log: deps.Log.With("component", "api"), now: deps.Now, met: met, limits: newLimits(cfg.API),
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.routeTab = a.routes()
	if a.openapi, err = openAPIJSON(a.routeTab, a.limits); err != nil {
		return nil, fmt.Errorf("query api: building the OpenAPI document: %w", err)
	}
	a.mux = a.router()
	a.handler = a.mux
	return a, nil
}

// Handler returns the API's handler, to be mounted at /api: every route
// below it needs an "Authorization: Token <key>" header.
func (a *API) Handler() http.Handler { return a.handler }

// Run blocks until ctx is done, then stops taking ingests (they answer 503
// with Retry-After) and waits for those in flight to get Kafka's answer,
// bounded by Config.DrainTimeout. Read requests go on being served as long
// as the HTTP server runs. It returns nil.
func (a *API) Run(ctx context.Context) error {
	a.log.Info("query api started")
	<-ctx.Done()
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(a.cfg.DrainTimeout):
		a.log.Warn("ingests still in flight after the drain timeout", "timeout", a.cfg.DrainTimeout)
	}
	a.log.Info("query api stopped")
	return nil
}

// beginIngest registers an ingest in flight; false once draining.
func (a *API) beginIngest() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining {
		return false
	}
	a.inflight.Add(1)
	return true
}

// route is one operation: its method and chi pattern under /api, its
// handler and its OpenAPI description. The router and the OpenAPI document
// are both built from the same table.
type route struct {
	method  string
	pattern string
	handler handlerFunc
	op      operation
}

// routes returns the route table.
func (a *API) routes() []route {
	return []route{
		{http.MethodGet, "/openapi.json", a.handleOpenAPI, opOpenAPI},
		{http.MethodGet, "/telemetry/data/", a.handleData, opData},
		{http.MethodGet, "/telemetry/latest/", a.handleLatest, opLatest},
		{http.MethodPost, "/telemetry/process/", a.handleProcess, opProcess},
		{http.MethodGet, "/users/owners/", a.handleOwners, opOwners},
		{http.MethodPost, "/users/notifications/", a.handleSetNotifications, opSetNotifications},
		{http.MethodGet, "/points/", a.handleListPoints, opListPoints},
		{http.MethodPost, "/points/", a.handleCreatePoint, opCreatePoint},
		{http.MethodGet, "/points/{code}/", a.handleGetPoint, opGetPoint},
		{http.MethodPatch, "/points/{code}/", a.handleUpdatePoint, opUpdatePoint},
		{http.MethodDelete, "/points/{code}/", a.handleDeletePoint, opDeletePoint},
		{http.MethodGet, "/points/{code}/devices/", a.handleListDevices, opListDevices},
		{http.MethodPost, "/points/{code}/devices/", a.handleAddDevice, opAddDevice},
		{http.MethodPatch, "/devices/{id}/", a.handleUpdateDevice, opUpdateDevice},
		{http.MethodDelete, "/devices/{id}/", a.handleRemoveDevice, opRemoveDevice},
		{http.MethodGet, "/alerts/rules/", a.handleListRules, opListRules},
		{http.MethodPost, "/alerts/rules/", a.handleCreateRule, opCreateRule},
		{http.MethodGet, "/alerts/rules/{id}/", a.handleGetRule, opGetRule},
		{http.MethodPatch, "/alerts/rules/{id}/", a.handleUpdateRule, opUpdateRule},
		{http.MethodDelete, "/alerts/rules/{id}/", a.handleDeleteRule, opDeleteRule},
		{http.MethodGet, "/alerts/", a.handleListAlerts, opListAlerts},
		{http.MethodPost, "/alerts/{id}/acknowledge/", a.handleAcknowledgeAlert, opAcknowledgeAlert},
		{http.MethodGet, "/notifications/", a.handleListInbox, opListInbox},
		{http.MethodPost, "/notifications/read-all/", a.handleReadAllInbox, opReadAllInbox},
		{http.MethodPost, "/notifications/{id}/read/", a.handleReadInbox, opReadInbox},
		{http.MethodGet, "/compliance/sources/", a.handleListSources, opListSources},
		{http.MethodGet, "/compliance/configs/", a.handleListConfigs, opListConfigs},
		{http.MethodPost, "/compliance/configs/", a.handleCreateConfig, opCreateConfig},
		{http.MethodGet, "/compliance/configs/{id}/", a.handleGetConfig, opGetConfig},
		{http.MethodPatch, "/compliance/configs/{id}/", a.handleUpdateConfig, opUpdateConfig},
		{http.MethodPost, "/compliance/configs/{id}/end/", a.handleEndConfig, opEndConfig},
		{http.MethodGet, "/compliance/data/", a.handleListSlots, opListSlots},
		{http.MethodPost, "/compliance/data/{id}/resubmit/", a.handleResubmit, opResubmit},
	}
}

// router builds the chi router of the route table, with the middleware
// every route shares: request id, metrics, authentication.
func (a *API) router() *chi.Mux {
	r := chi.NewRouter()
	r.Use(sanitizeRequestID, middleware.RequestID, a.requestContext, a.observe, a.authenticate)
	r.NotFound(a.wrap(a.notFound))
	r.MethodNotAllowed(a.wrap(a.methodNotAllowed))
	for _, rt := range a.routeTab {
		r.Method(rt.method, rt.pattern, a.wrap(rt.handler))
	}
	return r
}

// requestIDPattern is what an incoming X-Request-Id must look like to be
// kept (it is written to audit_log); anything else is replaced.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,100}$`)

// sanitizeRequestID drops an X-Request-Id header that is not a plain token,
// so that chi's RequestID generates one instead.
func sanitizeRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ids := r.Header.Values(middleware.RequestIDHeader); len(ids) > 1 || (len(ids) == 1 && !requestIDPattern.MatchString(ids[0])) {
			r.Header.Del(middleware.RequestIDHeader)
		}
		next.ServeHTTP(w, r)
	})
}

// requestContext echoes the request id and hands it to the audit log.
func (a *API) requestContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := middleware.GetReqID(r.Context())
		w.Header().Set(middleware.RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(audit.WithRequestID(r.Context(), id)))
	})
}

type principalKey struct{}

// principal returns the authenticated principal of the request.
func principal(r *http.Request) accounts.Principal {
	p, _ := r.Context().Value(principalKey{}).(accounts.Principal)
	return p
}

// authenticate admits requests with a valid "Authorization: Token <key>"
// header. Missing, malformed, unknown, revoked and expired tokens and
// inactive users all get the same 401, with WWW-Authenticate: Token.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values("Authorization")
		var err error
		var p accounts.Principal
		if len(values) != 1 {
			err = fmt.Errorf("%w: %d Authorization headers", accounts.ErrUnauthenticated, len(values))
		} else {
			var tok string
			if tok, err = accounts.ParseAuthorization(values[0]); err == nil {
				p, err = a.acc.Authenticate(r.Context(), tok)
			}
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// routePath returns the request's path below /api.
func routePath(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePath != "" {
		return rc.RoutePath
	}
	return r.URL.Path
}

// notFound answers an unknown path. A path that lacks only the trailing
// slash of a route (the old system's style) is redirected to it with 308,
// which keeps the method and the body.
func (a *API) notFound(w http.ResponseWriter, r *http.Request) error {
	if path := routePath(r); !strings.HasSuffix(path, "/") && a.mux.Match(chi.NewRouteContext(), r.Method, path+"/") {
		loc := r.URL.EscapedPath() + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, loc, http.StatusPermanentRedirect)
		return nil
	}
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no route %s %s", r.Method, printable(r.URL.Path))}
}

// methodNotAllowed answers a known path with another method, saying which
// methods it has.
func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if a.mux.Match(chi.NewRouteContext(), m, routePath(r)) {
			allowed = append(allowed, m)
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return &Error{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s is not allowed on %s; use %s",
		printable(r.Method), printable(r.URL.Path), strings.Join(allowed, ", "))}
}

// handleOpenAPI serves GET /api/openapi.json.
func (a *API) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	if _, err := negotiate(r, jsonOnly); err != nil {
		return err
	}
	if err := noParams(r); err != nil {
		return err
	}
	w.Header().Set("Content-Type", MediaJSON)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(a.openapi)
	return err
}
