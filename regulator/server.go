package regulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultTokenTTL is how long an SMA token is valid (Res. 254: 24 h).
	DefaultTokenTTL = 24 * time.Hour
	// DefaultMaxRequests bounds the request log.
	DefaultMaxRequests = 10000
	// maxBody bounds a request body.
	maxBody = 1 << 20
)

// DefaultSMAParameters are the parameters every SMA (dispositivo,
// estampaTiempo) must carry by default: flow and accumulated volume, as the
// one known implementation sends them (UNCONFIRMED).
var DefaultSMAParameters = []string{"Q", "VA"}

// Obra is the registration of a DGA obra: who may report it. Empty fields
// accept anything.
type Obra struct {
	// RutEmpresa is the Centro de Control allowed to report the obra.
	RutEmpresa string `json:"rut_empresa,omitempty"`
	// RutUsuario is the informant registered for the obra; another one is
	// answered "Usuario no es el informante registrado en la Obra".
	RutUsuario string `json:"rut_usuario,omitempty"`
	// Password is the informant's password.
	Password string `json:"password,omitempty"`
}

// DuplicateMode is how the SMA endpoint answers a slot it already accepted.
type DuplicateMode string

// The SMA duplicate modes. What SMA really does is UNCONFIRMED.
const (
	// DuplicateIdempotent answers 200 with the original IdVerificacion and
	// stores nothing. The default.
	DuplicateIdempotent DuplicateMode = "idempotent"
	// DuplicateAccept stores the slot again (a second acceptance, which
	// Violations reports) and answers 201 with a new IdVerificacion.
	DuplicateAccept DuplicateMode = "accept"
	// DuplicateReject answers 400 and stores nothing of the call.
	DuplicateReject DuplicateMode = "reject"
)

// Config configures a Server. The zero value is a lenient regulator with no
// fault: any obra, any SMA user, parameters Q and VA.
type Config struct {
	// Obras registers DGA obras by codigoObra. An obra that is not
	// registered accepts any credentials unless RequireRegistered is set.
	Obras map[string]Obra
	// RequireRegistered rejects submissions for unregistered obras
	// ("Obra no registrada").
	RequireRegistered bool
	// SMAUsers maps an SMA usuario to its password. Empty: any usuario
	// and password get a token.
	SMAUsers map[string]string
	// TokenTTL is how long an SMA token is valid. Default DefaultTokenTTL.
	TokenTTL time.Duration
	// SMAParameters is the exact set of parameter names each (dispositivo,
	// estampaTiempo) must carry; a missing or extra one answers 400.
	// Default DefaultSMAParameters.
	SMAParameters []string
	// SMADuplicates is how a repeated SMA slot is answered. Default
	// DuplicateIdempotent.
	SMADuplicates DuplicateMode
	// Faults are active from the start, in this order.
	Faults []Fault
	// Seed seeds the generator of fault probabilities, receipts and tokens.
	Seed uint64
	// MinInterval is the shortest time between two submissions of one
	// Centro de Control (DGA rutEmpresa, SMA usuario); an earlier one is
	// answered 429 with Retry-After and does not restart the interval.
	// 0 (the default) disables the limit.
	MinInterval time.Duration
	// MaxRequests bounds the request log; the oldest entries are dropped.
	// Default DefaultMaxRequests.
	MaxRequests int
	// StrictTimestamp requires timeStampOrigen as yyyy-MM-ddTHH:mm:ss
	// followed by a ±hhmm offset (emeltec3's reading of the manual).
	// Default false: any non-empty value, as SNIA is probably lenient.
	StrictTimestamp bool
	// AllowNullCaudal accepts "caudal": null (emeltec3 sends it when the
	// flow is unknown; whether SNIA accepts it is UNCONFIRMED). Default
	// false.
	AllowNullCaudal bool
	// SkipRUTCheck accepts RUTs whose modulo-11 check digit is wrong. The
	// format NNNNNNN(N)-D is always required.
	SkipRUTCheck bool
	// Now is the clock (token expiry, rate limit, timestamps). Default
	// time.Now.
	Now func() time.Time
	// Logger receives one line per request. Default: discard.
	Logger *slog.Logger
}

// Validate reports the first problem of c, naming the field.
func (c Config) Validate() error {
	if c.TokenTTL < 0 {
		return fmt.Errorf("config.TokenTTL: must be >= 0; got %s", c.TokenTTL)
	}
	if c.MinInterval < 0 {
		return fmt.Errorf("config.MinInterval: must be >= 0; got %s", c.MinInterval)
	}
	if c.MaxRequests < 0 {
		return fmt.Errorf("config.MaxRequests: must be >= 0; got %d", c.MaxRequests)
	}
	switch c.SMADuplicates {
	case "", DuplicateIdempotent, DuplicateAccept, DuplicateReject:
	default:
		return fmt.Errorf("config.SMADuplicates: unknown mode %q", c.SMADuplicates)
	}
	seen := map[string]bool{}
	for _, p := range c.SMAParameters {
		if p == "" || seen[p] {
			return fmt.Errorf("config.SMAParameters: empty or repeated name %q", p)
		}
		seen[p] = true
	}
	for code := range c.Obras {
		if !obraRE.MatchString(code) {
			return fmt.Errorf("config.Obras: codigoObra %q does not match %s", code, obraRE)
		}
	}
	for i, f := range c.Faults {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("config.Faults[%d]: %w", i, err)
		}
	}
	return nil
}

// Slot is what the regulator saw of one slot: a DGA (obra, fecha, hora) or
// an SMA (uf, proceso, dispositivo, estampaTiempo).
type Slot struct {
	// API is "dga" or "sma".
	API string `json:"api"`
	// Key is DGAKey or SMAKey of the slot.
	Key string `json:"key"`
	// Requests counts the requests naming the slot, whatever their answer
	// (faults, format errors and duplicates included).
	Requests int `json:"requests"`
	// Accepted counts the times the slot was stored as a new record: 1 in
	// healthy operation, more only with SMADuplicates "accept".
	Accepted int `json:"accepted"`
	// Duplicates counts the requests answered as duplicates of a stored
	// record (forced ones included).
	Duplicates int `json:"duplicates"`
	// Receipts are the receipts (numeroComprobante, IdVerificacion) of the
	// acceptances, in order.
	Receipts []string `json:"receipts"`
	// FirstAcceptedAt is when it was first stored.
	FirstAcceptedAt time.Time `json:"first_accepted_at,omitzero"`
	// Data is the stored values of the first acceptance.
	Data json.RawMessage `json:"data,omitempty"`
}

// Request is one request as the regulator recorded it. Passwords in the
// body and the Authorization token are replaced by "****".
type Request struct {
	Seq      int64     `json:"seq"`
	At       time.Time `json:"at"`
	Endpoint Endpoint  `json:"endpoint"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Query    string    `json:"query,omitempty"`
	// Header holds the first value of each header, keys in Go's canonical
	// form ("Codigoobra", "Timestamporigen").
	Header map[string]string `json:"header"`
	Body   string            `json:"body"`
	// Keys are the slot keys the request names.
	Keys []string `json:"keys,omitempty"`
	// Fault is the fault that fired on it.
	Fault FaultKind `json:"fault,omitempty"`
	// Status is the HTTP status answered; 0 while in flight or when no
	// answer was given (hang, client gone).
	Status int `json:"status"`
	// Outcome is accepted, duplicate, rejected, invalid, unauthorized,
	// rate_limited, server_error, not_found, ok (auth, verify), hung or
	// client_gone; empty while in flight.
	Outcome  string        `json:"outcome"`
	Response string        `json:"response,omitempty"`
	Receipt  string        `json:"receipt,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// DGAKey is the slot key of a DGA measurement: "obra|fecha|hora", e.g.
// "OB-0602-7|2026-06-11|13:00:00".
func DGAKey(obra, fecha, hora string) string { return obra + "|" + fecha + "|" + hora }

// SMAKey is the slot key of an SMA record: "uf|proceso|dispositivo|estampa",
// e.g. "123|4|12180|2026-05-17T14:05:00".
func SMAKey(uf, proceso, dispositivo, estampa string) string {
	return uf + "|" + proceso + "|" + dispositivo + "|" + estampa
}

// Server is the reference regulator. Its methods are safe for concurrent
// use. Close releases the requests held by slow and hang faults.
type Server struct {
	cfg       Config
	now       func() time.Time
	log       *slog.Logger
	handler   http.Handler
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	rng      *rand.Rand
	obras    map[string]Obra
	smaUsers map[string]string
	faults   []*activeFault
	faultSeq int64
	slots    map[string]*slotState
	receipts map[string]*dgaRecord // DGA numeroComprobante -> record
	tokens   map[string]token
	lastSent map[string]time.Time // Centro de Control -> last admitted submission
	requests []*Request
	reqSeq   int64
	dropped  int64
}

type slotState struct {
	Slot
	dga *dgaRecord // first DGA acceptance
}

type token struct {
	usuario string
	expires time.Time
}

// New returns a Server for cfg. It panics when cfg is invalid (see
// Config.Validate), as a programming error.
func New(cfg Config) *Server {
	if err := cfg.Validate(); err != nil {
		panic("regulator: " + err.Error())
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if len(cfg.SMAParameters) == 0 {
		cfg.SMAParameters = DefaultSMAParameters
	}
	cfg.SMAParameters = slices.Clone(cfg.SMAParameters)
	if cfg.SMADuplicates == "" {
		cfg.SMADuplicates = DuplicateIdempotent
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	s := &Server{
		cfg:    cfg,
		now:    cfg.Now,
		log:    cfg.Logger,
		closed: make(chan struct{}),
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.resetLocked()
	s.handler = s.routes()
	return s
}

// resetLocked sets the state to the configuration's. s.mu must be held (or
// s not yet shared).
func (s *Server) resetLocked() {
	s.obras = map[string]Obra{}
	for k, v := range s.cfg.Obras {
		s.obras[k] = v
	}
	s.smaUsers = map[string]string{}
	for k, v := range s.cfg.SMAUsers {
		s.smaUsers[k] = v
	}
	s.faults = nil
	for _, f := range s.cfg.Faults {
		s.addFaultLocked(f)
	}
	s.slots = map[string]*slotState{}
	s.receipts = map[string]*dgaRecord{}
	s.tokens = map[string]token{}
	s.lastSent = map[string]time.Time{}
	s.requests = nil
	s.dropped = 0
}

// Handler returns the regulator's HTTP handler: the DGA and SMA endpoints at
// their real paths and the admin API under /_admin/.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/mediciones/subterraneas", s.dgaSubmit(kindSubterranea))
	mux.HandleFunc("POST /api/v1/mediciones/superficiales/flujometro", s.dgaSubmit(kindFlujometro))
	mux.HandleFunc("GET /api/v1/mediciones/subterraneas", s.dgaVerify)
	mux.HandleFunc("GET /api/v1/mediciones/superficiales/flujometro", s.dgaVerify)
	mux.HandleFunc("POST /api/v1/auth", s.smaAuth)
	mux.HandleFunc("POST /api/v1/ufs/{uf}/procesos/{proceso}/registros", s.smaSubmit)
	s.adminRoutes(mux)
	mux.HandleFunc("/", s.unknown)
	return mux
}

// Serve answers on ln until ctx is done, then releases held requests (see
// Close) and shuts the HTTP server down, waiting at most 5s.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// Close releases every request held by a slow or hang fault (a hang then
// drops its connection) and makes later ones answer at once. Call it before
// closing an httptest.Server that serves Handler, whose Close waits for the
// handlers. It does not stop serving.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// Reset forgets every slot, request, token, rate-limit state and runtime
// registration and restores the configured faults.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

// RegisterObra registers (or replaces) obra code at run time.
func (s *Server) RegisterObra(code string, o Obra) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obras[code] = o
}

// RegisterSMAUser registers (or replaces) an SMA usuario at run time; from
// then on only registered users get tokens.
func (s *Server) RegisterSMAUser(usuario, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.smaUsers[usuario] = password
}

// AddFaults validates and appends faults to the active ones.
func (s *Server) AddFaults(faults ...Fault) error {
	for i, f := range faults {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("fault %d: %w", i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		s.addFaultLocked(f)
	}
	return nil
}

func (s *Server) addFaultLocked(f Fault) {
	s.faultSeq++
	s.faults = append(s.faults, &activeFault{id: s.faultSeq, f: f})
}

// ClearFaults removes every active fault and returns how many there were.
func (s *Server) ClearFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.faults)
	s.faults = nil
	return n
}

// Faults returns the active faults.
func (s *Server) Faults() []FaultStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FaultStatus, 0, len(s.faults))
	for _, a := range s.faults {
		rem := -1
		if a.f.Count > 0 {
			rem = a.f.Count - a.fired
		}
		out = append(out, FaultStatus{ID: a.id, Fault: a.f, Fired: a.fired, Remaining: rem})
	}
	return out
}

// ExpireTokens expires every SMA token now and returns how many were valid.
func (s *Server) ExpireTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expireTokensLocked()
}

func (s *Server) expireTokensLocked() int {
	now := s.now()
	n := 0
	for k, t := range s.tokens {
		if now.Before(t.expires) {
			n++
		}
		t.expires = now
		s.tokens[k] = t
	}
	return n
}

// Accepted returns, per slot key, how many times the slot was accepted, for
// the slots accepted at least once.
func (s *Server) Accepted() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, st := range s.slots {
		if st.Accepted > 0 {
			out[k] = st.Accepted
		}
	}
	return out
}

// Slots returns every slot seen, sorted by key.
func (s *Server) Slots() []Slot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Slot, 0, len(s.slots))
	for _, st := range s.slots {
		out = append(out, st.copy())
	}
	slices.SortFunc(out, func(a, b Slot) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Slot returns the slot of key.
func (s *Server) Slot(key string) (Slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.slots[key]
	if !ok {
		return Slot{}, false
	}
	return st.copy(), true
}

// Violations returns the slots accepted more than once, sorted by key:
// empty in healthy operation.
func (s *Server) Violations() []Slot {
	var out []Slot
	for _, sl := range s.Slots() {
		if sl.Accepted > 1 {
			out = append(out, sl)
		}
	}
	return out
}

// Requests returns the request log, oldest first (at most
// Config.MaxRequests entries).
func (s *Server) Requests() []Request {
	return s.RequestsSince(0)
}

// RequestsSince returns the logged requests whose Seq is greater than seq.
func (s *Server) RequestsSince(seq int64) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.requests))
	for _, r := range s.requests {
		if r.Seq > seq {
			c := *r
			c.Keys = slices.Clone(r.Keys)
			out = append(out, c)
		}
	}
	return out
}

func (st *slotState) copy() Slot {
	c := st.Slot
	c.Receipts = slices.Clone(st.Receipts)
	c.Data = slices.Clone(st.Data)
	return c
}

// exchange is one request being answered.
type exchange struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	rec   *Request
	start time.Time
	fault *Fault
}

// begin reads the body and logs the request.
func (s *Server) begin(w http.ResponseWriter, r *http.Request, ep Endpoint) (*exchange, []byte) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		body = nil
	}
	x := &exchange{s: s, w: w, r: r, start: s.now()}
	hdr := map[string]string{}
	for k, v := range r.Header {
		if len(v) == 0 {
			continue
		}
		if k == "Authorization" {
			if strings.HasPrefix(v[0], "Bearer ") {
				hdr[k] = "Bearer ****"
			} else {
				hdr[k] = "****"
			}
			continue
		}
		hdr[k] = v[0]
	}
	rec := &Request{
		At: x.start, Endpoint: ep, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Header: hdr, Body: redact(body),
	}
	s.mu.Lock()
	s.reqSeq++
	rec.Seq = s.reqSeq
	s.requests = append(s.requests, rec)
	if over := len(s.requests) - s.cfg.MaxRequests; over > 0 {
		s.requests = slices.Delete(s.requests, 0, over)
		s.dropped += int64(over)
	}
	s.mu.Unlock()
	x.rec = rec
	if len(body) > maxBody {
		return x, nil
	}
	return x, body
}

var passwordRE = regexp.MustCompile(`("password"\s*:\s*)"(?:[^"\\]|\\.)*"`)

// redact replaces the values of "password" keys.
func redact(body []byte) string {
	return passwordRE.ReplaceAllString(string(body), `$1"****"`)
}

// admit records the request's slots and subject, applies the rate limit of
// centre and picks the fault that fires. It returns the rate-limit wait (>0:
// answer 429).
func (x *exchange) admit(ep Endpoint, api string, keys []string, subject, centre string) time.Duration {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	x.rec.Keys = keys
	for _, k := range keys {
		s.slotLocked(api, k).Requests++
	}
	if centre != "" && s.cfg.MinInterval > 0 && (ep == EndpointDGA || ep == EndpointSMA) {
		now := s.now()
		if last, ok := s.lastSent[centre]; ok {
			if wait := last.Add(s.cfg.MinInterval).Sub(now); wait > 0 {
				return wait
			}
		}
		s.lastSent[centre] = now
	}
	for i, a := range s.faults {
		if !a.f.applies(ep) || (a.f.Match != "" && !strings.Contains(subject, a.f.Match)) {
			continue
		}
		if a.f.Probability > 0 && s.rng.Float64() >= a.f.Probability {
			continue
		}
		a.fired++
		f := a.f
		x.fault = &f
		x.rec.Fault = f.Kind
		if a.f.Count > 0 && a.fired >= a.f.Count {
			s.faults = slices.Delete(s.faults, i, i+1)
		}
		if f.Kind == FaultTokenExpiry {
			s.expireTokensLocked()
		}
		break
	}
	return 0
}

// slotLocked returns the state of slot key, created when new. s.mu must be
// held.
func (s *Server) slotLocked(api, key string) *slotState {
	st := s.slots[key]
	if st == nil {
		st = &slotState{Slot: Slot{API: api, Key: key, Receipts: []string{}}}
		s.slots[key] = st
	}
	return st
}

// faultIs reports whether the fault that fired is kind.
func (x *exchange) faultIs(kind FaultKind) bool { return x.fault != nil && x.fault.Kind == kind }

// preFault answers the faults that act before accepting (server_error,
// rate_limit); it reports whether it answered. errBody builds the API's
// error body from a message.
func (x *exchange) preFault(errBody func(msg string) any) bool {
	switch {
	case x.faultIs(FaultServerError):
		st := x.fault.Status
		if st == 0 {
			st = http.StatusServiceUnavailable
		}
		x.reply(st, "server_error", errBody("Error interno del servidor (falla inyectada)"), "")
		return true
	case x.faultIs(FaultRateLimit):
		x.rateLimited(x.fault.RetryAfter, errBody)
		return true
	}
	return false
}

// rateLimited answers 429 with Retry-After: wait rounded up to seconds, at
// least 1.
func (x *exchange) rateLimited(wait time.Duration, errBody func(msg string) any) {
	if wait <= 0 {
		wait = time.Second
	}
	secs := int(math.Ceil(wait.Seconds()))
	x.w.Header().Set("Retry-After", strconv.Itoa(secs))
	x.reply(http.StatusTooManyRequests, "rate_limited", errBody("Demasiadas solicitudes; reintente más tarde"), "")
}

// reply answers status with body as JSON, after the delay of a slow fault;
// a hang fault holds the request and then drops the connection.
func (x *exchange) reply(status int, outcome string, body any, receipt string) {
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"encoding the answer"}`)
	}
	if x.fault != nil && (x.fault.Kind == FaultSlow || x.fault.Kind == FaultHang) {
		var timeout <-chan time.Time
		if x.fault.Delay > 0 {
			t := time.NewTimer(x.fault.Delay)
			defer t.Stop()
			timeout = t.C
		}
		gone := false
		select {
		case <-x.r.Context().Done():
			gone = true
		case <-x.s.closed:
		case <-timeout:
		}
		if x.fault.Kind == FaultHang || gone {
			final := "hung"
			if x.fault.Kind == FaultSlow {
				final = "client_gone"
			}
			x.finish(0, final, string(b), receipt)
			// Drop the connection without an answer.
			panic(http.ErrAbortHandler)
		}
	}
	x.w.Header().Set("Content-Type", "application/json")
	x.w.WriteHeader(status)
	_, _ = x.w.Write(b)
	x.finish(status, outcome, string(b), receipt)
}

// finish completes the request's log entry and logs it.
func (x *exchange) finish(status int, outcome, response, receipt string) {
	s := x.s
	d := s.now().Sub(x.start)
	s.mu.Lock()
	x.rec.Status, x.rec.Outcome, x.rec.Response, x.rec.Receipt, x.rec.Duration = status, outcome, response, receipt, d
	keys, fault := x.rec.Keys, x.rec.Fault
	s.mu.Unlock()
	s.log.Info("regulator request", "endpoint", x.rec.Endpoint, "method", x.rec.Method, "path", x.rec.Path,
		"keys", keys, "status", status, "outcome", outcome, "fault", fault, "receipt", receipt,
		"duration_ms", d.Milliseconds())
}

// alnum is the alphabet of receipts.
const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomLocked returns n characters of alphabet from the seeded generator.
// s.mu must be held.
func (s *Server) randomLocked(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[s.rng.IntN(len(alphabet))]
	}
	return string(b)
}

// unknown answers any other path 404, recorded.
func (s *Server) unknown(w http.ResponseWriter, r *http.Request) {
	x, _ := s.begin(w, r, EndpointUnknown)
	x.reply(http.StatusNotFound, "not_found", map[string]string{"message": "ruta desconocida: " + r.Method + " " + r.URL.Path}, "")
}
