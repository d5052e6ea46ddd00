package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/compliance"
	cstore "github.com/stackvps/stackvps/compliance/store"
)

// ComplianceStore is what the compliance routes need of
// *cstore.Store (package compliance/store): sources, the points' configs
// and their slots. The store audits every change in the transaction of
// the change and checks no permissions: the API checks them with
// Accounts before calling it.
type ComplianceStore interface {
	Sources(ctx context.Context) ([]compliance.Source, error)
	Source(ctx context.Context, code string) (compliance.Source, error)
	ListConfigs(ctx context.Context, f cstore.ConfigFilter) ([]cstore.Config, error)
	GetConfig(ctx context.Context, id int64) (cstore.Config, error)
	CreateConfig(ctx context.Context, actor cstore.Actor, nc cstore.NewConfig) (cstore.Config, error)
	UpdateConfig(ctx context.Context, actor cstore.Actor, id int64, u cstore.ConfigUpdate) (cstore.Config, error)
	EndConfig(ctx context.Context, actor cstore.Actor, id int64, end time.Time) (cstore.Config, error)
	ListSubmissions(ctx context.Context, f cstore.SubmissionFilter) (cstore.SubmissionPage, error)
	GetSubmission(ctx context.Context, id int64) (cstore.Submission, error)
	RequestResubmission(ctx context.Context, actor cstore.Actor, id int64, reason string) (cstore.Submission, error)
}

// Page sizes and limits of the compliance routes.
const (
	complianceDefaultPage = 100
	complianceMaxPage     = 1000
	// maxReason bounds a resubmission's reason.
	maxReason = 500
	// maxComplianceCursor bounds the cursor of GET /api/compliance/data/.
	maxComplianceCursor = 200
)

// complianceFormats are the formats of GET /api/compliance/data/: JSON
// (slots with their attempts) or CSV (slots only).
var complianceFormats = []string{MediaJSON, MediaCSV}

// redactedSecret replaces a secret in what the API shows.
const redactedSecret = "****"

// compliance returns the compliance store, or the 503 of an API started
// without one.
func (a *API) compliance() (ComplianceStore, error) {
	if a.deps.Compliance == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable,
			Message: "compliance is not available: this API runs without the compliance store (query.Deps.Compliance)"}
	}
	return a.deps.Compliance, nil
}

// sourceJSON is a compliance source as the API shows it.
type sourceJSON struct {
	Code               string          `json:"code"`
	Name               string          `json:"name"`
	Protocol           string          `json:"protocol"`
	Endpoint           string          `json:"endpoint"`
	TimeZone           string          `json:"time_zone"`
	Variables          []string        `json:"variables"`
	RequiredSchema     json.RawMessage `json:"required_schema"`
	MinInterval        string          `json:"min_interval"`
	RequestTimeout     string          `json:"request_timeout"`
	RetryRejectedAfter string          `json:"retry_rejected_after"`
	MaxAttempts        int             `json:"max_attempts"`
	Active             bool            `json:"active"`
}

func toSourceJSON(s compliance.Source) sourceJSON {
	schema := s.Schema
	if len(bytes.TrimSpace(schema)) == 0 || !json.Valid(schema) {
		schema = json.RawMessage(`{}`)
	}
	vars := s.Variables
	if vars == nil {
		vars = []string{}
	}
	return sourceJSON{Code: s.Code, Name: s.Name, Protocol: s.Protocol, Endpoint: s.Endpoint, TimeZone: s.TimeZone,
		Variables: vars, RequiredSchema: schema, MinInterval: s.MinInterval.String(), RequestTimeout: s.RequestTimeout.String(),
		RetryRejectedAfter: s.RetryRejectedAfter.String(), MaxAttempts: s.MaxAttempts, Active: s.Active}
}

// handleListSources serves GET /api/compliance/sources/: every source,
// for any authenticated user.
func (a *API) handleListSources(w http.ResponseWriter, r *http.Request) error {
	if _, err := jsonCall(w, r, "", nil); err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	srcs, err := cs.Sources(r.Context())
	if err != nil {
		return err
	}
	writeList(w, srcs, toSourceJSON)
	return nil
}

// configJSON is a compliance config as the API shows it: never the
// credentials, only whether some are stored.
type configJSON struct {
	ID             int64             `json:"id"`
	Point          string            `json:"point"`
	Source         string            `json:"source"`
	Config         compliance.Params `json:"config"`
	CredentialsSet bool              `json:"credentials_set"`
	StartDate      string            `json:"start_date"`
	EndDate        *string           `json:"end_date"`
	// Active: today, in the source's zone, is within the config's dates.
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// toConfigJSON shows c; loc is its source's zone (for active).
func toConfigJSON(c cstore.Config, loc *time.Location, now time.Time) configJSON {
	out := configJSON{ID: c.ID, Point: c.Point, Source: c.Source, Config: c.Params, CredentialsSet: c.HasCredentials,
		StartDate: c.StartDate.Format(cstore.DateLayout), Active: c.Covers(now, loc),
		CreatedAt: c.CreatedAt.UTC(), UpdatedAt: c.UpdatedAt.UTC()}
	if c.EndDate != nil {
		e := c.EndDate.Format(cstore.DateLayout)
		out.EndDate = &e
	}
	return out
}

// sourceLocation returns the zone of the source with code among srcs, UTC
// when it is unknown or its zone does not load.
func sourceLocation(srcs []compliance.Source, code string) *time.Location {
	for _, s := range srcs {
		if s.Code == code {
			if loc, err := s.Location(); err == nil {
				return loc
			}
		}
	}
	return time.UTC
}

// credentialsInput are a config's credentials as a client sends them.
// They are write-only: no response shows them.
type credentialsInput struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// check validates the credentials for src and returns them.
func (c credentialsInput) check(src compliance.Source) (*compliance.Credentials, error) {
	if c.Password == "" {
		return nil, badParam("credentials.password", "required: the informant's password for the regulator")
	}
	if len(c.Password) > 1024 || len(c.Username) > 256 {
		return nil, badParam("credentials", "too long")
	}
	if src.Protocol == compliance.ProtocolSMA && strings.TrimSpace(c.Username) == "" {
		return nil, badParam("credentials.username", "required for %s", src.Code)
	}
	return &compliance.Credentials{Username: c.Username, Password: c.Password}, nil
}

// configCreate is the body of POST /api/compliance/configs/.
type configCreate struct {
	Point       string             `json:"point"`
	Source      string             `json:"source"`
	Config      *compliance.Params `json:"config"`
	Credentials *credentialsInput  `json:"credentials"`
	StartDate   string             `json:"start_date"`
	EndDate     *string            `json:"end_date"`
}

// parseComplianceDate parses a calendar day YYYY-MM-DD as midnight UTC.
func parseComplianceDate(param, s string) (time.Time, error) {
	t, err := time.Parse(cstore.DateLayout, s)
	if err != nil || len(s) != len(cstore.DateLayout) {
		return time.Time{}, badParam(param, "%s: want a date YYYY-MM-DD such as 2026-11-01", quoted(s))
	}
	if t.Year() < 1900 || t.Year() > 9000 {
		return time.Time{}, badParam(param, "%s is out of range (years 1900-9000)", quoted(s))
	}
	return t, nil
}

// complianceFieldPattern finds the field an invalid-argument message of
// compliance or compliance/store starts with: "config.codigo_obra: ...",
// "end_date 2026-01-01 must be after ...", "source: unknown ...".
var complianceFieldPattern = regexp.MustCompile(`^(config\.[a-z_]+|start_date|end_date|source|point|credentials|status|after)\b`)

// complianceParam returns the request field an invalid-argument message is
// about, or fallback.
func complianceParam(msg, fallback string) string {
	msg = strings.TrimPrefix(msg, cstore.ErrInvalid.Error()+": ")
	m := complianceFieldPattern.FindString(msg)
	switch m {
	case "":
		return fallback
	case "after":
		return "cursor"
	}
	return m
}

// invalidParams is the 400 of params that fail compliance.Params.Validate,
// naming the first field at fault.
func invalidParams(err error) error {
	return &Error{Status: http.StatusBadRequest, Param: complianceParam(err.Error(), "config"), Message: err.Error(), Err: err}
}

// fromCompliance turns the compliance store's sentinels into client
// errors: not found 404 (param), conflict 409, invalid 400 naming the
// field (or 503 when credentials cannot be sealed because
// compliance.credentials_key is not set). Other errors are returned as
// they are (500).
func fromCompliance(err error, param string) error {
	msg := err.Error()
	switch {
	case errors.Is(err, cstore.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Param: param, Message: msg, Err: err}
	case errors.Is(err, cstore.ErrConflict):
		return &Error{Status: http.StatusConflict, Param: param, Message: strings.TrimPrefix(msg, cstore.ErrConflict.Error()+": "), Err: err}
	case errors.Is(err, cstore.ErrInvalid) && strings.Contains(msg, "credentials_key"):
		return &Error{Status: http.StatusServiceUnavailable, Param: "credentials",
			Message: "credentials cannot be stored: compliance.credentials_key is not set on the server", Err: err}
	case errors.Is(err, cstore.ErrInvalid):
		return &Error{Status: http.StatusBadRequest, Param: complianceParam(msg, "body"),
			Message: strings.TrimPrefix(msg, cstore.ErrInvalid.Error()+": "), Err: err}
	}
	return err
}

// complianceSource returns the source with code, a 400 naming source when
// there is none.
func complianceSource(ctx context.Context, cs ComplianceStore, code string) (compliance.Source, error) {
	src, err := cs.Source(ctx, code)
	if errors.Is(err, cstore.ErrNotFound) {
		return src, badParam("source", "unknown compliance source %s; GET /api/compliance/sources/ lists them", quoted(code))
	}
	return src, err
}

// handleCreateConfig serves POST /api/compliance/configs/
// (manage_compliance on the point).
func (a *API) handleCreateConfig(w http.ResponseWriter, r *http.Request) error {
	var in configCreate
	if _, err := jsonCall(w, r, "", &in); err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	if err := checkIdent("point", in.Point); err != nil {
		return err
	}
	if in.Source == "" {
		return badParam("source", "required: the code of a compliance source (dga-subterraneas, sma, ...)")
	}
	if err := checkIdent("source", in.Source); err != nil {
		return err
	}
	if in.Config == nil {
		return badParam("config", "required: the source's parameters (codigo_obra, rut_empresa, ...)")
	}
	if in.StartDate == "" {
		return badParam("start_date", "required: the first day reported, YYYY-MM-DD")
	}
	start, err := parseComplianceDate("start_date", in.StartDate)
	if err != nil {
		return err
	}
	var end *time.Time
	if in.EndDate != nil {
		e, err := parseComplianceDate("end_date", *in.EndDate)
		if err != nil {
			return err
		}
		if !e.After(start) {
			return badParam("end_date", "must be after start_date %s (end_date is exclusive)", start.Format(cstore.DateLayout))
		}
		end = &e
	}
	ctx, pr := r.Context(), principal(r)
	if err := a.acc.Can(ctx, pr, in.Point, accounts.PermManageCompliance); err != nil {
		return fromAccounts(err, "point")
	}
	src, err := complianceSource(ctx, cs, in.Source)
	if err != nil {
		return err
	}
	if err := in.Config.Validate(src); err != nil {
		return invalidParams(err)
	}
	nc := cstore.NewConfig{Point: in.Point, Source: in.Source, Params: *in.Config, StartDate: start, EndDate: end}
	if in.Credentials != nil {
		if nc.Credentials, err = in.Credentials.check(src); err != nil {
			return err
		}
	}
	c, err := cs.CreateConfig(ctx, pr, nc)
	if err != nil {
		return fromCompliance(err, "point")
	}
	loc, _ := src.Location()
	if loc == nil {
		loc = time.UTC
	}
	w.Header().Set("Location", fmt.Sprintf("/api/compliance/configs/%d/", c.ID))
	writeJSON(w, http.StatusCreated, toConfigJSON(c, loc, a.now()))
	return nil
}

// handleListConfigs serves GET /api/compliance/configs/: the configs of
// the points the caller can read.
func (a *API) handleListConfigs(w http.ResponseWriter, r *http.Request) error {
	p, err := jsonParams(r, []string{"point", "source", "active"})
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	var f cstore.ConfigFilter
	if f.Point, err = identParam(p, "point"); err != nil {
		return err
	}
	if f.Source, err = identParam(p, "source"); err != nil {
		return err
	}
	var active *bool
	if p.has("active") {
		v, err := boolParam(p, "active")
		if err != nil {
			return err
		}
		active = &v
	}
	ctx, pr := r.Context(), principal(r)
	if f.Point != "" {
		if err := a.acc.Can(ctx, pr, f.Point, accounts.PermRead); err != nil {
			return fromAccounts(err, "point")
		}
	} else if f.Points, err = a.complianceVisiblePoints(ctx, pr); err != nil {
		return err
	}
	srcs, err := cs.Sources(ctx)
	if err != nil {
		return err
	}
	cfgs, err := cs.ListConfigs(ctx, f)
	if err != nil {
		return fromCompliance(err, "")
	}
	now := a.now()
	out := listJSON[configJSON]{Results: []configJSON{}}
	for _, c := range cfgs {
		cj := toConfigJSON(c, sourceLocation(srcs, c.Source), now)
		if active == nil || cj.Active == *active {
			out.Results = append(out.Results, cj)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// complianceVisiblePoints returns the points p can read for a store filter: nil
// (no restriction) for administrators, else the visible points (an empty
// non-nil slice when none).
func (a *API) complianceVisiblePoints(ctx context.Context, p accounts.Principal) ([]string, error) {
	if p.IsAdmin() {
		return nil, nil
	}
	pts, err := a.acc.VisiblePoints(ctx, p)
	if err != nil {
		return nil, fromAccounts(err, "point")
	}
	if pts == nil {
		pts = []string{}
	}
	return pts, nil
}

// Messages of the 400 of a path id that is not a positive integer
// (jsonIDCall).
const (
	configBadID = "%s: want a config id (a positive integer)"
	slotBadID   = "%s: want a slot id (a positive integer)"
)

// configNotFound is the one answer for a config that does not exist and
// for one of a point the caller cannot read.
func configNotFound(id int64) *Error {
	return &Error{Status: http.StatusNotFound, Param: "id", Message: fmt.Sprintf("compliance config %d %s", id, cstore.ErrNotFound)}
}

// visibleConfig returns the config with id when the caller has perm on its
// point: configNotFound when it does not exist or the caller cannot read
// its point, 403 when the caller can read it but lacks perm.
func (a *API) visibleConfig(r *http.Request, cs ComplianceStore, id int64, perm accounts.Permission) (cstore.Config, error) {
	c, err := cs.GetConfig(r.Context(), id)
	if errors.Is(err, cstore.ErrNotFound) {
		return c, configNotFound(id)
	}
	if err != nil {
		return c, err
	}
	return c, a.canOrHidden(r, c.Point, perm, configNotFound(id))
}

// canOrHidden checks that the caller has perm on point, the point of what
// the path id names: when the caller cannot read the point the answer is
// notFound, the same as for an id that does not exist.
func (a *API) canOrHidden(r *http.Request, point string, perm accounts.Permission, notFound *Error) error {
	if err := a.acc.Can(r.Context(), principal(r), point, perm); err != nil {
		if errors.Is(err, accounts.ErrNotFound) {
			return notFound
		}
		return fromAccounts(err, "id")
	}
	return nil
}

// configLocation returns the zone of the config's source.
func configLocation(ctx context.Context, cs ComplianceStore, c cstore.Config) (compliance.Source, *time.Location, error) {
	src, err := cs.Source(ctx, c.Source)
	if err != nil {
		return src, nil, err
	}
	loc, err := src.Location()
	if err != nil {
		loc = time.UTC
	}
	return src, loc, nil
}

// handleGetConfig serves GET /api/compliance/configs/{id}/.
func (a *API) handleGetConfig(w http.ResponseWriter, r *http.Request) error {
	id, err := jsonIDCall(w, r, configBadID, nil)
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	c, err := a.visibleConfig(r, cs, id, accounts.PermRead)
	if err != nil {
		return err
	}
	_, loc, err := configLocation(r.Context(), cs, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toConfigJSON(c, loc, a.now()))
	return nil
}

// configPatch is the body of PATCH /api/compliance/configs/{id}/: absent
// fields stay. config changes the params it names (the others stay);
// credentials null removes them; end_date null makes the config
// open-ended.
type configPatch struct {
	Config      json.RawMessage            `json:"config"`
	Credentials optional[credentialsInput] `json:"credentials"`
	EndDate     optional[string]           `json:"end_date"`
}

// handleUpdateConfig serves PATCH /api/compliance/configs/{id}/
// (manage_compliance on its point). Audited.
func (a *API) handleUpdateConfig(w http.ResponseWriter, r *http.Request) error {
	var patch configPatch
	id, err := jsonIDCall(w, r, configBadID, &patch)
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	c, err := a.visibleConfig(r, cs, id, accounts.PermManageCompliance)
	if err != nil {
		return err
	}
	src, loc, err := configLocation(r.Context(), cs, c)
	if err != nil {
		return err
	}
	var u cstore.ConfigUpdate
	if len(patch.Config) > 0 && string(patch.Config) != "null" {
		params := c.Params
		dec := json.NewDecoder(bytes.NewReader(patch.Config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&params); err != nil {
			var e *Error
			if errors.As(jsonError(err), &e) && e.Param != "body" {
				e.Param = "config." + e.Param
				return e
			}
			return badParam("config", "want an object of parameters (codigo_obra, rut_empresa, ...)")
		}
		if err := params.Validate(src); err != nil {
			return invalidParams(err)
		}
		u.Params = &params
	} else if string(patch.Config) == "null" {
		return badParam("config", "may not be null")
	}
	switch {
	case patch.Credentials.null:
		u.ClearCredentials = true
	case patch.Credentials.set:
		if u.Credentials, err = patch.Credentials.v.check(src); err != nil {
			return err
		}
	}
	switch {
	case patch.EndDate.null:
		u.ClearEndDate = true
	case patch.EndDate.set:
		e, err := parseComplianceDate("end_date", patch.EndDate.v)
		if err != nil {
			return err
		}
		u.EndDate = &e
	}
	c, err = cs.UpdateConfig(r.Context(), principal(r), id, u)
	if err != nil {
		return fromCompliance(err, "id")
	}
	writeJSON(w, http.StatusOK, toConfigJSON(c, loc, a.now()))
	return nil
}

// configEnd is the body of POST /api/compliance/configs/{id}/end/.
type configEnd struct {
	EndDate string `json:"end_date"`
}

// handleEndConfig serves POST /api/compliance/configs/{id}/end/
// (manage_compliance): the config stops at end_date (exclusive); its
// history stays. Audited.
func (a *API) handleEndConfig(w http.ResponseWriter, r *http.Request) error {
	var in configEnd
	id, err := jsonIDCall(w, r, configBadID, &in)
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	if in.EndDate == "" {
		return badParam("end_date", "required: the first day no longer reported, YYYY-MM-DD")
	}
	end, err := parseComplianceDate("end_date", in.EndDate)
	if err != nil {
		return err
	}
	c, err := a.visibleConfig(r, cs, id, accounts.PermManageCompliance)
	if err != nil {
		return err
	}
	_, loc, err := configLocation(r.Context(), cs, c)
	if err != nil {
		return err
	}
	c, err = cs.EndConfig(r.Context(), principal(r), id, end)
	if err != nil {
		return fromCompliance(err, "id")
	}
	writeJSON(w, http.StatusOK, toConfigJSON(c, loc, a.now()))
	return nil
}

// valuesJSON are a slot's values in canonical units.
type valuesJSON struct {
	Flow      *float64 `json:"flow"`
	Totalizer *float64 `json:"totalizer"`
	Level     *float64 `json:"level"`
}

func toValuesJSON(v *compliance.Values) *valuesJSON {
	if v == nil {
		return nil
	}
	return &valuesJSON{Flow: v.Flow, Totalizer: v.Totalizer, Level: v.Level}
}

// attemptJSON is one request sent (or refused locally) for a slot.
type attemptJSON struct {
	ID         int64           `json:"id"`
	Attempt    int             `json:"attempt"`
	Round      int             `json:"round"`
	Kind       string          `json:"kind"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Request    json.RawMessage `json:"request"`
	HTTPStatus *int            `json:"http_status"`
	Response   string          `json:"response"`
	DurationMS int64           `json:"duration_ms"`
	Outcome    *string         `json:"outcome"`
	Receipt    string          `json:"receipt"`
	Error      string          `json:"error"`
}

// slotJSON is one slot (compliance_submissions row) as the API shows it.
type slotJSON struct {
	ID            int64         `json:"id"`
	ConfigID      int64         `json:"config_id"`
	Point         string        `json:"point"`
	Source        string        `json:"source"`
	SlotAt        time.Time     `json:"slot_at"`
	PeriodStart   time.Time     `json:"period_start"`
	PeriodEnd     time.Time     `json:"period_end"`
	Status        string        `json:"status"`
	Data          *valuesJSON   `json:"data"`
	DataVersion   int           `json:"data_version"`
	Correction    *valuesJSON   `json:"correction"`
	Receipt       string        `json:"receipt"`
	Reason        string        `json:"reason"`
	HTTPStatus    *int          `json:"http_status"`
	Response      string        `json:"response"`
	LastOutcome   string        `json:"last_outcome"`
	AttemptCount  int           `json:"attempt_count"`
	Round         int           `json:"round"`
	NextAttemptAt *time.Time    `json:"next_attempt_at"`
	ConfirmedAt   *time.Time    `json:"confirmed_at"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
	Attempts      []attemptJSON `json:"attempts"`
}

func complianceUTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func complianceInt(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func toSlotJSON(s cstore.Submission) slotJSON {
	out := slotJSON{ID: s.ID, ConfigID: s.ConfigID, Point: s.Point, Source: s.Source, SlotAt: s.SlotAt.UTC(),
		PeriodStart: s.PeriodStart.UTC(), PeriodEnd: s.PeriodEnd.UTC(), Status: s.Status, Data: toValuesJSON(s.Data),
		DataVersion: s.DataVersion, Correction: toValuesJSON(s.Correction), Receipt: s.Receipt, Reason: s.Reason,
		HTTPStatus: complianceInt(s.HTTPStatus), Response: s.Response, LastOutcome: s.LastOutcome, AttemptCount: s.Attempts,
		Round: s.Round, NextAttemptAt: complianceUTC(s.NextAttemptAt), ConfirmedAt: complianceUTC(s.ConfirmedAt),
		CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC(), Attempts: make([]attemptJSON, len(s.History))}
	for i, at := range s.History {
		aj := attemptJSON{ID: at.ID, Attempt: at.Attempt, Round: at.Round, Kind: at.Kind, StartedAt: at.StartedAt.UTC(),
			FinishedAt: complianceUTC(at.FinishedAt), Request: redactSecrets(at.Request), HTTPStatus: complianceInt(at.HTTPStatus),
			Response: at.Response, DurationMS: at.DurationMS, Receipt: at.Receipt, Error: at.Error}
		if at.Outcome != "" {
			aj.Outcome = new(at.Outcome)
		}
		out.Attempts[i] = aj
	}
	return out
}

// complianceSecretKey matches the JSON keys whose values are secrets.
var complianceSecretKey = regexp.MustCompile(`(?i)pass|clave|secret|token|authorization|api[-_]?key`)

// redactSecrets returns the recorded request with the value of every key
// that names a secret replaced by "****". The submitter records requests
// already redacted; this is a second guard, so that no credential ever
// leaves through the API whatever a protocol recorded. A value that is not
// JSON is shown as null.
func redactSecrets(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("null")
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage("null")
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if complianceSecretKey.MatchString(k) && x != nil {
					t[k] = redactedSecret
				} else {
					t[k] = walk(x)
				}
			}
		case []any:
			for i, x := range t {
				t[i] = walk(x)
			}
		}
		return v
	}
	b, err := json.Marshal(walk(v))
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// slotPage is the JSON body of GET /api/compliance/data/.
type slotPage struct {
	Next       *string    `json:"next"`
	NextCursor *string    `json:"next_cursor"`
	Results    []slotJSON `json:"results"`
}

// slotQueryParams are the query parameters of GET /api/compliance/data/.
var slotQueryParams = []string{"point", "source", "status", "from", "to", "page_size", "cursor"}

// handleListSlots serves GET /api/compliance/data/: one page of the slots
// of the points the caller can read, newest first, each with its attempts
// (JSON) or slots only (CSV).
func (a *API) handleListSlots(w http.ResponseWriter, r *http.Request) error {
	format, err := negotiate(r, complianceFormats)
	if err != nil {
		return err
	}
	p, err := parseParams(r, slotQueryParams, "point", "status")
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	f := cstore.SubmissionFilter{WithAttempts: format == MediaJSON}
	pts, err := pointsParam(p, false, maxLatestPoints)
	if err != nil {
		return err
	}
	if f.Source, err = identParam(p, "source"); err != nil {
		return err
	}
	for _, st := range p.list("status") {
		st = strings.ToUpper(st)
		if !slices.Contains(cstore.Statuses, st) {
			return badParam("status", "%s: want one of %s", quoted(st), strings.Join(cstore.Statuses, ", "))
		}
		f.Statuses = append(f.Statuses, st)
	}
	if p.has("from") {
		if f.From, err = parseTime("from", p.get("from")); err != nil {
			return err
		}
	}
	if p.has("to") {
		if f.To, err = parseTime("to", p.get("to")); err != nil {
			return err
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return badParam("to", "must be after from (%s)", f.From.Format(time.RFC3339Nano))
	}
	if f.Limit, err = pageSizeParam(p, complianceDefaultPage, complianceMaxPage); err != nil {
		return err
	}
	if p.has("cursor") {
		c := p.get("cursor")
		if c == "" || len(c) > maxComplianceCursor {
			return badParam("cursor", "not a cursor of this API; use next_cursor of the previous page as it is")
		}
		f.After = c
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
	defer cancel()
	pr := principal(r)
	if len(pts) > 0 {
		if err := a.requireRead(ctx, pr, pts); err != nil {
			return err
		}
		f.Points = pts
	} else if f.Points, err = a.complianceVisiblePoints(ctx, pr); err != nil {
		return err
	}
	page, err := cs.ListSubmissions(ctx, f)
	if err != nil {
		return fromCompliance(err, "")
	}
	var next string
	if page.Next != "" {
		v := url.Values{}
		if len(pts) > 0 {
			v["point"] = pts
		}
		if f.Source != "" {
			v.Set("source", f.Source)
		}
		if len(f.Statuses) > 0 {
			v["status"] = f.Statuses
		}
		if !f.From.IsZero() {
			v.Set("from", f.From.Format(time.RFC3339Nano))
		}
		if !f.To.IsZero() {
			v.Set("to", f.To.Format(time.RFC3339Nano))
		}
		v.Set("page_size", strconv.Itoa(f.Limit))
		v.Set("cursor", page.Next)
		next = r.URL.EscapedPath() + "?" + v.Encode()
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	if format == MediaCSV {
		return writeSlotsCSV(w, page.Submissions)
	}
	out := slotPage{Results: make([]slotJSON, len(page.Submissions))}
	for i, s := range page.Submissions {
		out.Results[i] = toSlotJSON(s)
	}
	if next != "" {
		out.Next, out.NextCursor = &next, &page.Next
	}
	w.Header().Set("Vary", "Accept")
	writeJSON(w, http.StatusOK, out)
	return nil
}

// slotCSVColumns are the columns of the CSV of GET /api/compliance/data/.
var slotCSVColumns = []string{"id", "config_id", "point", "source", "slot_at", "period_start", "period_end", "status",
	"flow", "totalizer", "level", "data_version", "receipt", "reason", "http_status", "last_outcome", "attempt_count",
	"round", "next_attempt_at", "confirmed_at", "updated_at"}

// writeSlotsCSV writes the slots as CSV with a header line. Text cells are
// neutralized against spreadsheet formulas; absent values are empty.
func writeSlotsCSV(w http.ResponseWriter, subs []cstore.Submission) error {
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	h.Set("Vary", "Accept")
	h.Set("X-Content-Type-Options", "nosniff")
	var b []byte
	for i, c := range slotCSVColumns {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, c...)
	}
	b = append(b, '\n')
	tm := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	num := func(v *compliance.Values, pick func(compliance.Values) *float64) string {
		if v == nil || pick(*v) == nil {
			return ""
		}
		return strconv.FormatFloat(*pick(*v), 'g', -1, 64)
	}
	for _, s := range subs {
		status := ""
		if s.HTTPStatus != 0 {
			status = strconv.Itoa(s.HTTPStatus)
		}
		cells := []string{strconv.FormatInt(s.ID, 10), strconv.FormatInt(s.ConfigID, 10), neutralizeFormula(s.Point),
			neutralizeFormula(s.Source), tm(&s.SlotAt), tm(&s.PeriodStart), tm(&s.PeriodEnd), s.Status,
			num(s.Data, func(v compliance.Values) *float64 { return v.Flow }),
			num(s.Data, func(v compliance.Values) *float64 { return v.Totalizer }),
			num(s.Data, func(v compliance.Values) *float64 { return v.Level }),
			strconv.Itoa(s.DataVersion), neutralizeFormula(s.Receipt), neutralizeFormula(s.Reason), status,
			s.LastOutcome, strconv.Itoa(s.Attempts), strconv.Itoa(s.Round), tm(s.NextAttemptAt), tm(s.ConfirmedAt),
			tm(&s.UpdatedAt)}
		for i, c := range cells {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCSVField(b, c)
		}
		b = append(b, '\n')
	}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(b)
	return err
}

// resubmitInput is the body of POST /api/compliance/data/{id}/resubmit/.
type resubmitInput struct {
	Reason string `json:"reason"`
}

// slotNotFound is the one answer for a slot that does not exist and for
// one of a point the caller cannot read.
func slotNotFound(id int64) *Error {
	return &Error{Status: http.StatusNotFound, Param: "id", Message: fmt.Sprintf("compliance slot %d %s", id, cstore.ErrNotFound)}
}

// handleResubmit serves POST /api/compliance/data/{id}/resubmit/
// (manage_compliance on the slot's point): the slot goes back to PENDING
// in a new round. 409 when its state does not allow it. Audited.
func (a *API) handleResubmit(w http.ResponseWriter, r *http.Request) error {
	var in resubmitInput
	id, err := jsonIDCall(w, r, slotBadID, &in)
	if err != nil {
		return err
	}
	cs, err := a.compliance()
	if err != nil {
		return err
	}
	reason := strings.TrimSpace(in.Reason)
	switch {
	case reason == "":
		return badParam("reason", "required: why the slot is submitted again (kept in the audit log)")
	case len(reason) > maxReason:
		return badParam("reason", "too long (%d bytes); at most %d", len(reason), maxReason)
	}
	ctx, pr := r.Context(), principal(r)
	s, err := cs.GetSubmission(ctx, id)
	if errors.Is(err, cstore.ErrNotFound) {
		return slotNotFound(id)
	}
	if err != nil {
		return err
	}
	if err := a.canOrHidden(r, s.Point, accounts.PermManageCompliance, slotNotFound(id)); err != nil {
		return err
	}
	s, err = cs.RequestResubmission(ctx, pr, id, reason)
	if err != nil {
		return fromCompliance(err, "id")
	}
	if s.History == nil {
		if full, err := cs.GetSubmission(ctx, id); err == nil {
			s = full
		}
	}
	writeJSON(w, http.StatusOK, toSlotJSON(s))
	return nil
}

// OpenAPI descriptions of the compliance routes.

func complianceDateSchema(desc string) obj {
	return obj{"type": "string", "format": "date", "description": desc}
}

func complianceParamsSchema(required bool) obj {
	s := obj{"type": "object", "additionalProperties": false, "properties": obj{
		"codigo_obra":    str("DGA work code, e.g. OB-0602-7 (dga-mee sources)."),
		"rut_empresa":    str("RUT of the Centro de Control, NNNNNNNN-D (dga-mee)."),
		"rut_usuario":    str("RUT of the informant registered for the obra (dga-mee)."),
		"standard":       obj{"type": "string", "enum": []string{"mayor", "medio", "menor", "muy_pequenos", "sin_estandar"}, "description": "DGA standard; gives the frequency when frequency is empty."},
		"frequency":      obj{"type": "string", "enum": []string{"", "hourly", "daily", "monthly", "semiannual"}, "description": "Slot frequency; from standard when empty, else hourly."},
		"value_mode":     obj{"type": "string", "enum": []string{"", "instant", "mean"}, "description": "instant (default): the value at the slot; mean: over its period."},
		"uf_id":          str("SMA Unidad Fiscalizable id (sma-registros)."),
		"proceso_id":     str("SMA proceso id (sma-registros)."),
		"dispositivo_id": str("SMA dispositivo id (sma-registros)."),
	}}
	if required {
		s["required"] = []string{"frequency", "value_mode"}
	}
	return s
}

func complianceCredentialsSchema() obj {
	return obj{"type": "object", "additionalProperties": false, "required": []string{"password"},
		"description": "Write-only: sealed with compliance.credentials_key, never returned nor logged.",
		"properties": obj{
			"username": str("User name (SMA usuario; unused by DGA, whose informant is rut_usuario)."),
			"password": obj{"type": "string", "format": "password", "minLength": 1, "description": "The informant's password."},
		}}
}

func complianceSourceSchema() obj {
	dur := func(desc string) obj { return str(desc + " Go duration, e.g. 1s, 24h0m0s.") }
	return obj{"type": "object", "additionalProperties": false,
		"required": []string{"code", "name", "protocol", "endpoint", "time_zone", "variables", "required_schema",
			"min_interval", "request_timeout", "retry_rejected_after", "max_attempts", "active"},
		"properties": obj{
			"code":                 str("Source code (dga-subterraneas, dga-superficiales-flujometro, sma, ...)."),
			"name":                 str("Name."),
			"protocol":             obj{"type": "string", "description": "The client that talks to the regulator.", "example": "dga-mee"},
			"endpoint":             str("URL the requests go to."),
			"time_zone":            str("IANA zone of the slots and of the configs' dates."),
			"variables":            obj{"type": "array", "items": obj{"type": "string", "enum": []string{"flow", "totalizer", "level"}}, "description": "Canonical variables the source takes."},
			"required_schema":      obj{"type": "object", "description": "JSON Schema every request body must satisfy before it is sent."},
			"min_interval":         dur("Least time between two requests."),
			"request_timeout":      dur("Bound of one request."),
			"retry_rejected_after": dur("Wait before a rejected slot is sent again."),
			"max_attempts":         obj{"type": "integer", "description": "Attempts before a rejection is final."},
			"active":               obj{"type": "boolean", "description": "false: nothing is submitted to it."},
		}}
}

func complianceConfigSchema() obj {
	dt := func(desc string) obj { return obj{"type": "string", "format": "date-time", "description": desc} }
	return obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "point", "source", "config", "credentials_set", "start_date", "end_date", "active", "created_at", "updated_at"},
		"properties": obj{
			"id":              obj{"type": "integer", "format": "int64"},
			"point":           str("Point code."),
			"source":          str("Source code."),
			"config":          complianceParamsSchema(true),
			"credentials_set": obj{"type": "boolean", "description": "Whether credentials are stored (they are never shown)."},
			"start_date":      complianceDateSchema("First day reported (inclusive), in the source's zone."),
			"end_date":        nullable(complianceDateSchema("First day no longer reported (exclusive); null: open-ended.")),
			"active":          obj{"type": "boolean", "description": "Today, in the source's zone, is within the dates."},
			"created_at":      dt("Created."), "updated_at": dt("Last changed."),
		}}
}

func complianceSlotSchema() obj {
	dt := func(desc string) obj { return obj{"type": "string", "format": "date-time", "description": desc} }
	num := func(desc string) obj {
		return obj{"type": "number", "format": "double", "nullable": true, "description": desc}
	}
	values := func(desc string) obj {
		return obj{"type": "object", "nullable": true, "additionalProperties": false, "description": desc,
			"required":   []string{"flow", "totalizer", "level"},
			"properties": obj{"flow": num("L/s."), "totalizer": num("m3."), "level": num("m.")}}
	}
	status := func(desc string) obj { return obj{"type": "integer", "nullable": true, "description": desc} }
	attempt := obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "attempt", "round", "kind", "started_at", "finished_at", "request", "http_status",
			"response", "duration_ms", "outcome", "receipt", "error"},
		"properties": obj{
			"id":          obj{"type": "integer", "format": "int64"},
			"attempt":     obj{"type": "integer", "description": "Its number for the slot, from 1."},
			"round":       obj{"type": "integer", "description": "Resubmission round (0: the first submission)."},
			"kind":        obj{"type": "string", "enum": []string{cstore.KindSend, cstore.KindRetry, cstore.KindResendAfterUnknown, cstore.KindResubmission, cstore.KindInvalid}},
			"started_at":  dt("Recorded before the request was sent."),
			"finished_at": nullable(dt("When its outcome was recorded; null while in flight or unknown.")),
			"request":     obj{"nullable": true, "description": "The request as sent, secrets redacted (\"****\")."},
			"http_status": status("The regulator's HTTP status; null when none came."),
			"response":    str("The regulator's response body (at most 64 KiB)."),
			"duration_ms": obj{"type": "integer", "format": "int64"},
			"outcome":     nullable(str("confirmed, rejected, rejected_terminal, unknown, transient, rate_limited or invalid; null while in flight.")),
			"receipt":     str("The regulator's receipt (DGA numeroComprobante, SMA IdVerificacion), or empty."),
			"error":       str("What failed, or empty."),
		}}
	return obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "config_id", "point", "source", "slot_at", "period_start", "period_end", "status", "data",
			"data_version", "correction", "receipt", "reason", "http_status", "response", "last_outcome", "attempt_count",
			"round", "next_attempt_at", "confirmed_at", "created_at", "updated_at", "attempts"},
		"properties": obj{
			"id":              obj{"type": "integer", "format": "int64"},
			"config_id":       obj{"type": "integer", "format": "int64"},
			"point":           str("Point code."),
			"source":          str("Source code."),
			"slot_at":         dt("The instant reported."),
			"period_start":    dt("Start of the period the slot covers."),
			"period_end":      dt("End of the period (the slot instant)."),
			"status":          obj{"type": "string", "enum": cstore.Statuses},
			"data":            values("The values to report; null while none arrived."),
			"data_version":    obj{"type": "integer"},
			"correction":      values("Newer values that arrived after the slot was sent (never sent automatically); null when none."),
			"receipt":         str("The regulator's receipt, or empty."),
			"reason":          str("Why the slot is in its state, or empty."),
			"http_status":     status("HTTP status of the last answer; null when none."),
			"response":        str("Body of the last answer, or empty."),
			"last_outcome":    str("Outcome of the last attempt, or empty."),
			"attempt_count":   obj{"type": "integer", "description": "Requests made for the slot, all rounds."},
			"round":           obj{"type": "integer", "description": "Resubmission round (0: the first submission)."},
			"next_attempt_at": nullable(dt("When the submitter acts on it next; null: not scheduled.")),
			"confirmed_at":    nullable(dt("When it was confirmed; null: not yet.")),
			"created_at":      dt("Created."), "updated_at": dt("Last changed."),
			"attempts": obj{"type": "array", "items": attempt, "description": "Every attempt, oldest first (empty in CSV)."},
		}}
}

var complianceIDParam = paramSpec{name: "id", in: "path", required: true, description: "Config id.",
	schema: obj{"type": "string", "pattern": "^[0-9]+$"}}

var opListSources = operation{
	id: "listComplianceSources", tag: "compliance", summary: "The regulators' sources",
	description: "Every compliance source (DGA groundwater, DGA surface flowmeter, SMA and the ones the configuration " +
		"defines), active or not, ordered by code. Any authenticated user. 503 when the API runs without the compliance cstore.",
	ok: 200, okDesc: "The sources.", okSchema: listOf(complianceSourceSchema()),
	errors: []int{400, 406, 503},
}

var opCreateConfig = operation{
	id: "createComplianceConfig", tag: "compliance", summary: "Bind a point to a source for a date range (manage_compliance)",
	description: "The params are validated for the source; a 400 names the field (`config.codigo_obra`). Credentials are " +
		"write-only: sealed with compliance.credentials_key (503 when it is not set), never returned (the response says " +
		"`credentials_set`), never written to the audit log. Two configs of a point and source may not overlap (409). Audited.",
	body: &bodySpec{description: "The config.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"required": []string{"point", "source", "config", "start_date"},
		"properties": obj{
			"point": str("Point code."), "source": str("Source code."),
			"config":      complianceParamsSchema(false),
			"credentials": complianceCredentialsSchema(),
			"start_date":  complianceDateSchema("First day reported (inclusive), in the source's zone."),
			"end_date":    complianceDateSchema("First day no longer reported (exclusive); absent: open-ended."),
		}}},
	ok: 201, okDesc: "Created.", okSchema: complianceConfigSchema(),
	okHeaders: obj{"Location": obj{"description": "The config's URL.", "schema": obj{"type": "string"}}},
	errors:    []int{400, 403, 404, 406, 409, 413, 415, 503},
}

var opListConfigs = operation{
	id: "listComplianceConfigs", tag: "compliance", summary: "The compliance configs of the points the caller can read",
	params: []paramSpec{
		{name: "point", in: "query", description: "Only this point's (404 when the caller cannot read it).",
			schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}},
		{name: "source", in: "query", description: "Only this source's.", schema: obj{"type": "string"}},
		{name: "active", in: "query", description: "true: only configs covering today; false: only the others.", schema: obj{"type": "boolean"}},
	},
	ok: 200, okDesc: "The configs, ordered by point, source and start date.", okSchema: listOf(complianceConfigSchema()),
	errors: []int{400, 404, 406, 503},
}

var opGetConfig = operation{
	id: "getComplianceConfig", tag: "compliance", summary: "One compliance config",
	params: []paramSpec{complianceIDParam},
	ok:     200, okDesc: "The config.", okSchema: complianceConfigSchema(),
	errors: []int{400, 404, 406, 503},
}

var opUpdateConfig = operation{
	id: "updateComplianceConfig", tag: "compliance", summary: "Change a config's params, credentials or end date (manage_compliance)",
	description: "Absent fields stay. `config` changes the params it names; `credentials` replaces them (null removes them); " +
		"`end_date` null makes the config open-ended. Slots that fall out of a shortened range are removed while nothing " +
		"was sent for them. Audited (never the credentials). There is no DELETE: end a config to keep its history.",
	params: []paramSpec{complianceIDParam},
	body: &bodySpec{description: "The fields to change.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"properties": obj{
			"config":      complianceParamsSchema(false),
			"credentials": nullable(complianceCredentialsSchema()),
			"end_date":    nullable(complianceDateSchema("First day no longer reported (exclusive); null: open-ended.")),
		}}},
	ok: 200, okDesc: "The config as changed.", okSchema: complianceConfigSchema(),
	errors: []int{400, 403, 404, 406, 409, 413, 415, 503},
}

var opEndConfig = operation{
	id: "endComplianceConfig", tag: "compliance", summary: "End a config at a date (manage_compliance)",
	description: "The config reports up to the day before end_date; its slots and attempts stay. Audited.",
	params:      []paramSpec{complianceIDParam},
	body: &bodySpec{description: "The end.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"required":   []string{"end_date"},
		"properties": obj{"end_date": complianceDateSchema("First day no longer reported (exclusive).")}}},
	ok: 200, okDesc: "The config as ended.", okSchema: complianceConfigSchema(),
	errors: []int{400, 403, 404, 406, 409, 413, 415, 503},
}

var opListSlots = operation{
	id: "listComplianceData", tag: "compliance", summary: "Reporting slots and every attempt to submit them",
	description: "The slots (one per config and reporting instant) of the points the caller can read, newest first " +
		"(slot_at, then id, descending), each with every attempt: the request as sent with secrets redacted, the " +
		"response, HTTP status, duration, outcome and receipt. Pagination is by keyset: when more follow, `next` and " +
		"`next_cursor` (and a Link header) give the next page. JSON by default; `Accept: text/csv` gives the slots " +
		"only, with a header line.",
	params: []paramSpec{
		{name: "point", in: "query", multi: true,
			description: fmt.Sprintf("Point code; repeat for several (at most %d). Every point the caller can read when absent; one the caller cannot read is 404.", maxLatestPoints),
			schema:      obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}},
		{name: "source", in: "query", description: "Only this source's slots.", schema: obj{"type": "string"}},
		{name: "status", in: "query", multi: true, description: "Only slots in these statuses.",
			schema: obj{"type": "string", "enum": cstore.Statuses}},
		{name: "from", in: "query", description: "slot_at at or after this time, RFC 3339.", schema: obj{"type": "string", "format": "date-time"}},
		{name: "to", in: "query", description: "slot_at before this time, RFC 3339.", schema: obj{"type": "string", "format": "date-time"}},
		{name: "page_size", in: "query", description: fmt.Sprintf("Slots per page: 1 to %d; default %d.", complianceMaxPage, complianceDefaultPage),
			schema: obj{"type": "integer", "minimum": 1, "maximum": complianceMaxPage}},
		{name: "cursor", in: "query", description: "Where the page starts: next_cursor of the previous page.",
			schema: obj{"type": "string", "maxLength": maxComplianceCursor}},
	},
	ok: 200, okDesc: "One page of slots.", okFormats: complianceFormats,
	okSchema: obj{"type": "object", "additionalProperties": false, "required": []string{"next", "next_cursor", "results"},
		"properties": obj{
			"next":        nullable(str("URL (path and query) of the next page; null on the last page.")),
			"next_cursor": nullable(str("Cursor of the next page; null on the last page.")),
			"results":     obj{"type": "array", "items": complianceSlotSchema()},
		}},
	okHeaders: obj{"Link": obj{"description": `The next page: <url>; rel="next". Absent on the last page.`, "schema": obj{"type": "string"}}},
	errors:    []int{400, 404, 406, 503},
}

var opResubmit = operation{
	id: "resubmitComplianceSlot", tag: "compliance", summary: "Ask for one slot to be submitted again (manage_compliance)",
	description: "A CONFIRMED, REJECTED or MISSING slot, or an ERROR one set aside for review, goes back to PENDING in a " +
		"new round, which allows exactly one more confirmed submission; a correction that arrived after it was sent " +
		"becomes its data. 409 when the slot's state does not allow it or it has no data. Audited with the reason.",
	params: []paramSpec{{name: "id", in: "path", required: true, description: "Slot id.", schema: obj{"type": "string", "pattern": "^[0-9]+$"}}},
	body: &bodySpec{description: "Why.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"required":   []string{"reason"},
		"properties": obj{"reason": obj{"type": "string", "minLength": 1, "maxLength": maxReason, "description": "Why the slot is submitted again."}}}},
	ok: 200, okDesc: "The slot, PENDING in its new round.", okSchema: complianceSlotSchema(),
	errors: []int{400, 403, 404, 406, 409, 413, 415, 503},
}
