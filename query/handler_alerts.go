package query

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/alerts"
)

// AlertStore is what the alert routes need of *alerts.Store: rules and
// alerts read and changed on a principal's behalf, authorized (read to
// list, manage_notifications to change or acknowledge) and audited. A rule
// or alert on a point the principal cannot read is accounts.ErrNotFound;
// invalid fields are *alerts.FieldError.
type AlertStore interface {
	Rules(ctx context.Context, p accounts.Principal, point string) ([]alerts.Rule, error)
	Rule(ctx context.Context, p accounts.Principal, id int64) (alerts.Rule, error)
	CreateRule(ctx context.Context, p accounts.Principal, r alerts.Rule) (alerts.Rule, error)
	UpdateRule(ctx context.Context, p accounts.Principal, id int64, apply func(*alerts.Rule) error) (alerts.Rule, error)
	DeleteRule(ctx context.Context, p accounts.Principal, id int64) error
	Alerts(ctx context.Context, p accounts.Principal, f alerts.AlertFilter) ([]alerts.Alert, error)
	Acknowledge(ctx context.Context, p accounts.Principal, id int64) (alerts.Alert, error)
}

// alertStore returns Deps.Alerts, or a 503 naming what is missing.
func (a *API) alertStore() (AlertStore, error) {
	if a.deps.Alerts == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable,
			Message: "alerts are not available: this API was built without the alert store (query.Deps.Alerts)"}
	}
	return a.deps.Alerts, nil
}

// ruleJSON is an alert rule as the API shows it.
type ruleJSON struct {
	ID       int64           `json:"id"`
	Point    string          `json:"point"`
	Variable *string         `json:"variable"`
	Kind     alerts.Kind     `json:"kind"`
	Params   json.RawMessage `json:"params"`
	Severity string          `json:"severity"`
	// RenotifyInterval is null when the rule takes alert.renotify_interval.
	RenotifyInterval *string   `json:"renotify_interval"`
	Active           bool      `json:"active"`
	CreatedBy        *int64    `json:"created_by"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

func toRuleJSON(r alerts.Rule) ruleJSON {
	out := ruleJSON{ID: r.ID, Point: r.Point, Kind: r.Kind, Params: r.RawParams, Severity: r.Severity, Active: r.Active,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
	if r.Variable != "" {
		out.Variable = new(r.Variable)
	}
	if r.RenotifyInterval > 0 {
		out.RenotifyInterval = new(r.RenotifyInterval.String())
	}
	if r.CreatedBy != 0 {
		out.CreatedBy = new(r.CreatedBy)
	}
	if len(out.Params) == 0 {
		out.Params = json.RawMessage(`{}`)
	}
	return out
}

// alertJSON is an alert as the API shows it.
type alertJSON struct {
	ID             int64           `json:"id"`
	RuleID         *int64          `json:"rule_id"`
	Point          string          `json:"point"`
	Variable       *string         `json:"variable"`
	Kind           alerts.Kind     `json:"kind"`
	Severity       string          `json:"severity"`
	State          string          `json:"state"`
	OpenedAt       time.Time       `json:"opened_at"`
	AcknowledgedAt *time.Time      `json:"acknowledged_at"`
	AcknowledgedBy *int64          `json:"acknowledged_by"`
	ResolvedAt     *time.Time      `json:"resolved_at"`
	LastValue      *float64        `json:"last_value"`
	LastSeenAt     time.Time       `json:"last_seen_at"`
	LastNotifiedAt time.Time       `json:"last_notified_at"`
	NotifyCount    int             `json:"notify_count"`
	Details        json.RawMessage `json:"details"`
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return new(t.UTC())
}

func toAlertJSON(al alerts.Alert) alertJSON {
	out := alertJSON{ID: al.ID, Point: al.Point, Kind: al.Kind, Severity: al.Severity, State: al.State,
		OpenedAt: al.OpenedAt.UTC(), AcknowledgedAt: utcPtr(al.AcknowledgedAt), ResolvedAt: utcPtr(al.ResolvedAt),
		LastValue: al.LastValue, LastSeenAt: al.LastSeenAt.UTC(), LastNotifiedAt: al.LastNotifiedAt.UTC(),
		NotifyCount: al.NotifyCount, Details: al.Details}
	if al.RuleID != 0 {
		out.RuleID = new(al.RuleID)
	}
	if al.Variable != "" {
		out.Variable = new(al.Variable)
	}
	if al.AcknowledgedBy != 0 {
		out.AcknowledgedBy = new(al.AcknowledgedBy)
	}
	if len(out.Details) == 0 {
		out.Details = json.RawMessage(`{}`)
	}
	return out
}

// fromAlerts turns the alerts store's errors into client errors: a field
// error is a 400 naming the field, a conflict 409; the accounts sentinels
// as fromAccounts does, about param.
func fromAlerts(err error, param string) error {
	var fe *alerts.FieldError
	switch {
	case errors.As(err, &fe):
		return &Error{Status: http.StatusBadRequest, Param: fe.Field, Message: fe.Error(), Err: err}
	case errors.Is(err, alerts.ErrConflict):
		return &Error{Status: http.StatusConflict, Param: param, Message: err.Error(), Err: err}
	}
	return fromAccounts(err, param)
}

// alertBadID is the message of the 400 of a rule or alert id in the path
// that is not a positive integer (pathID).
const alertBadID = "must be a positive integer; got %s"

// parseRenotify parses a renotify_interval ("" for none).
func parseRenotify(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, badParam("renotify_interval", "must be a positive duration such as \"6h\"; got %s", quoted(s))
	}
	return d, nil
}

// handleListRules serves GET /api/alerts/rules/?point=: the rules of one
// point, or of every point the caller can read.
func (a *API) handleListRules(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	p, err := jsonParams(r, []string{"point"})
	if err != nil {
		return err
	}
	point, err := identParam(p, "point")
	if err != nil {
		return err
	}
	rules, err := store.Rules(r.Context(), principal(r), point)
	if err != nil {
		return fromAlerts(err, "point")
	}
	writeList(w, rules, toRuleJSON)
	return nil
}

// ruleCreate is the body of POST /api/alerts/rules/.
type ruleCreate struct {
	Point            string          `json:"point"`
	Variable         string          `json:"variable"`
	Kind             string          `json:"kind"`
	Params           json.RawMessage `json:"params"`
	Severity         string          `json:"severity"`
	RenotifyInterval string          `json:"renotify_interval"`
	Active           *bool           `json:"active"`
}

// handleCreateRule serves POST /api/alerts/rules/ (manage_notifications on
// the point).
func (a *API) handleCreateRule(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	var in ruleCreate
	if _, err := jsonCall(w, r, "", &in); err != nil {
		return err
	}
	if in.Point == "" {
		return badParam("point", "required: the code of the point")
	}
	if err := checkIdent("point", in.Point); err != nil {
		return err
	}
	if in.Kind == "" {
		return badParam("kind", "required: one of threshold_above, threshold_below, rate_of_change, data_gap, stuck, totalizer_reset, compliance_missing, compliance_rejected")
	}
	renotify, err := parseRenotify(in.RenotifyInterval)
	if err != nil {
		return err
	}
	rule, err := store.CreateRule(r.Context(), principal(r), alerts.Rule{Point: in.Point, Variable: in.Variable,
		Kind: alerts.Kind(in.Kind), RawParams: in.Params, Severity: in.Severity, RenotifyInterval: renotify,
		Active: in.Active == nil || *in.Active})
	if err != nil {
		return fromAlerts(err, "point")
	}
	w.Header().Set("Location", "/api/alerts/rules/"+strconv.FormatInt(rule.ID, 10)+"/")
	writeJSON(w, http.StatusCreated, toRuleJSON(rule))
	return nil
}

// handleGetRule serves GET /api/alerts/rules/{id}/.
func (a *API) handleGetRule(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	if _, err := jsonCall(w, r, "", nil); err != nil {
		return err
	}
	id, err := pathID(r, "id", alertBadID)
	if err != nil {
		return err
	}
	rule, err := store.Rule(r.Context(), principal(r), id)
	if err != nil {
		return fromAlerts(err, "id")
	}
	writeJSON(w, http.StatusOK, toRuleJSON(rule))
	return nil
}

// rulePatch is the body of PATCH /api/alerts/rules/{id}/: absent fields
// stay; variable and renotify_interval may be null (none, the default).
type rulePatch struct {
	Variable         optional[string]          `json:"variable"`
	Kind             optional[string]          `json:"kind"`
	Params           optional[json.RawMessage] `json:"params"`
	Severity         optional[string]          `json:"severity"`
	RenotifyInterval optional[string]          `json:"renotify_interval"`
	Active           optional[bool]            `json:"active"`
}

// apply changes rl as the patch says.
func (rp rulePatch) apply(rl *alerts.Rule) error {
	switch {
	case rp.Variable.null:
		rl.Variable = ""
	case rp.Variable.set:
		rl.Variable = rp.Variable.v
	}
	if v, ok, err := rp.Kind.value("kind"); err != nil {
		return err
	} else if ok {
		rl.Kind = alerts.Kind(v)
	}
	if v, ok, err := rp.Params.value("params"); err != nil {
		return err
	} else if ok {
		rl.RawParams = v
	}
	if v, ok, err := rp.Severity.value("severity"); err != nil {
		return err
	} else if ok {
		rl.Severity = v
	}
	switch {
	case rp.RenotifyInterval.null:
		rl.RenotifyInterval = 0
	case rp.RenotifyInterval.set:
		d, err := parseRenotify(rp.RenotifyInterval.v)
		if err != nil {
			return err
		}
		if d == 0 {
			return badParam("renotify_interval", "must be a positive duration such as \"6h\", or null for the default")
		}
		rl.RenotifyInterval = d
	}
	if v, ok, err := rp.Active.value("active"); err != nil {
		return err
	} else if ok {
		rl.Active = v
	}
	return nil
}

// handleUpdateRule serves PATCH /api/alerts/rules/{id}/
// (manage_notifications). A rule made inactive, or changed in kind or
// variable, has its unresolved alerts resolved.
func (a *API) handleUpdateRule(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	var patch rulePatch
	if _, err := jsonCall(w, r, "", &patch); err != nil {
		return err
	}
	id, err := pathID(r, "id", alertBadID)
	if err != nil {
		return err
	}
	rule, err := store.UpdateRule(r.Context(), principal(r), id, patch.apply)
	if err != nil {
		var qe *Error
		if errors.As(err, &qe) {
			return qe
		}
		return fromAlerts(err, "id")
	}
	writeJSON(w, http.StatusOK, toRuleJSON(rule))
	return nil
}

// handleDeleteRule serves DELETE /api/alerts/rules/{id}/
// (manage_notifications). Its unresolved alerts are resolved and keep
// their history.
func (a *API) handleDeleteRule(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id", alertBadID)
	if err != nil {
		return err
	}
	if err := noParams(r); err != nil {
		return err
	}
	if err := store.DeleteRule(r.Context(), principal(r), id); err != nil {
		return fromAlerts(err, "id")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleListAlerts serves GET /api/alerts/?point=&state=&before=&page_size=:
// the alerts of the points the caller can read, newest first.
func (a *API) handleListAlerts(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	p, err := jsonParams(r, []string{"point", "state", "before", "page_size"})
	if err != nil {
		return err
	}
	f := alerts.AlertFilter{State: p.get("state")}
	if f.Point, err = identParam(p, "point"); err != nil {
		return err
	}
	if p.has("before") {
		if f.BeforeID, err = positiveInt("before", p.get("before"), "must be a positive alert id; got %s"); err != nil {
			return err
		}
	}
	if f.Limit, err = pageSizeParam(p, 100, 1000); err != nil {
		return err
	}
	list, err := store.Alerts(r.Context(), principal(r), f)
	if err != nil {
		return fromAlerts(err, "point")
	}
	writeList(w, list, toAlertJSON)
	return nil
}

// handleAcknowledgeAlert serves POST /api/alerts/{id}/acknowledge/
// (manage_notifications): no more re-notifications; it still resolves.
func (a *API) handleAcknowledgeAlert(w http.ResponseWriter, r *http.Request) error {
	store, err := a.alertStore()
	if err != nil {
		return err
	}
	id, err := jsonIDCall(w, r, alertBadID, nil)
	if err != nil {
		return err
	}
	al, err := store.Acknowledge(r.Context(), principal(r), id)
	if err != nil {
		return fromAlerts(err, "id")
	}
	writeJSON(w, http.StatusOK, toAlertJSON(al))
	return nil
}

// OpenAPI descriptions of the alert routes.
var (
	alertIDPathParam = paramSpec{name: "id", in: "path", required: true, description: "Alert rule or alert id.",
		schema: obj{"type": "integer", "format": "int64", "minimum": 1}}
	alertKinds = []string{"threshold_above", "threshold_below", "rate_of_change", "data_gap", "stuck",
		"totalizer_reset", "compliance_missing", "compliance_rejected"}
	ruleParamsSchema = obj{"type": "object", "description": "Parameters of the kind: threshold_*: limit (required), deadband; " +
		"rate_of_change: max_per_minute; data_gap: after (\"15m\"); stuck: window (\"30m\"), tolerance; " +
		"totalizer_reset: clear_after (default \"1h\"); compliance_missing: after (default submit.missing_after); " +
		"compliance_rejected: within (default \"168h\")."}
	ruleSchema = obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "point", "variable", "kind", "params", "severity", "renotify_interval", "active", "created_by", "created_at", "updated_at"},
		"properties": obj{
			"id": obj{"type": "integer", "format": "int64"}, "point": str("Point code."),
			"variable":          nullable(str("Variable; null: every variable (data_gap) or the whole point (compliance kinds).")),
			"kind":              obj{"type": "string", "enum": alertKinds},
			"params":            ruleParamsSchema,
			"severity":          obj{"type": "string", "enum": []string{"info", "warning", "critical"}},
			"renotify_interval": nullable(str("Re-notification interval; null takes alert.renotify_interval.")),
			"active":            obj{"type": "boolean"},
			"created_by":        nullable(obj{"type": "integer", "format": "int64"}),
			"created_at":        obj{"type": "string", "format": "date-time"},
			"updated_at":        obj{"type": "string", "format": "date-time"},
		}}
	alertSchema = obj{"type": "object", "additionalProperties": false,
		"required": []string{"id", "rule_id", "point", "variable", "kind", "severity", "state", "opened_at", "acknowledged_at",
			"acknowledged_by", "resolved_at", "last_value", "last_seen_at", "last_notified_at", "notify_count", "details"},
		"properties": obj{
			"id":               obj{"type": "integer", "format": "int64"},
			"rule_id":          nullable(obj{"type": "integer", "format": "int64", "description": "Null once the rule was deleted."}),
			"point":            str("Point code."),
			"variable":         nullable(str("Variable; null for point-wide alerts.")),
			"kind":             obj{"type": "string", "enum": alertKinds},
			"severity":         obj{"type": "string", "enum": []string{"info", "warning", "critical"}},
			"state":            obj{"type": "string", "enum": []string{"open", "acknowledged", "resolved"}},
			"opened_at":        obj{"type": "string", "format": "date-time"},
			"acknowledged_at":  nullable(obj{"type": "string", "format": "date-time"}),
			"acknowledged_by":  nullable(obj{"type": "integer", "format": "int64"}),
			"resolved_at":      nullable(obj{"type": "string", "format": "date-time"}),
			"last_value":       nullable(obj{"type": "number", "format": "double"}),
			"last_seen_at":     obj{"type": "string", "format": "date-time"},
			"last_notified_at": obj{"type": "string", "format": "date-time"},
			"notify_count":     obj{"type": "integer", "description": "Notifications so far: the opening and each re-notification."},
			"details":          obj{"type": "object", "description": "What the rule saw (limit, rate, gap, slots, ...)."},
		}}
)

var opListRules = operation{
	id: "listAlertRules", tag: "alerts", summary: "Alert rules of a point, or of every point the caller can read",
	params: []paramSpec{{name: "point", in: "query", description: "Point code; every point the caller can read when absent.",
		schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}}},
	ok: 200, okDesc: "The rules, by point and id.", okSchema: listOf(ruleSchema),
	errors: []int{400, 404, 406, 503},
}

var opCreateRule = operation{
	id: "createAlertRule", tag: "alerts", summary: "Create an alert rule (manage_notifications)",
	description: "Validation errors are 400 naming the field (`param`: kind, variable, severity, renotify_interval, params.<key>). Audited.",
	body: &bodySpec{description: "The rule.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"required": []string{"point", "kind"}, "properties": obj{
			"point": str("Point code."), "variable": str("Variable (flow, totalizer, level, ...); required by thresholds, rate_of_change and stuck."),
			"kind": obj{"type": "string", "enum": alertKinds}, "params": ruleParamsSchema,
			"severity":          obj{"type": "string", "enum": []string{"info", "warning", "critical"}, "description": "Default warning."},
			"renotify_interval": str("Duration such as \"6h\"; default alert.renotify_interval."),
			"active":            obj{"type": "boolean", "description": "Default true."},
		}}},
	ok: 201, okDesc: "Created.", okSchema: ruleSchema,
	okHeaders: obj{"Location": obj{"description": "The rule's URL.", "schema": obj{"type": "string"}}},
	errors:    []int{400, 403, 404, 406, 413, 415, 503},
}

var opGetRule = operation{
	id: "getAlertRule", tag: "alerts", summary: "One alert rule (read)",
	params: []paramSpec{alertIDPathParam},
	ok:     200, okDesc: "The rule.", okSchema: ruleSchema,
	errors: []int{400, 404, 406, 503},
}

var opUpdateRule = operation{
	id: "updateAlertRule", tag: "alerts", summary: "Change an alert rule (manage_notifications)",
	description: "Absent fields stay; variable and renotify_interval may be null. A rule made inactive, or changed in kind " +
		"or variable, has its unresolved alerts resolved without notification. Audited.",
	params: []paramSpec{alertIDPathParam},
	body: &bodySpec{description: "The fields to change.", mediaType: MediaJSON, schema: obj{"type": "object", "additionalProperties": false,
		"properties": obj{
			"variable": nullable(str("Variable.")), "kind": obj{"type": "string", "enum": alertKinds}, "params": ruleParamsSchema,
			"severity":          obj{"type": "string", "enum": []string{"info", "warning", "critical"}},
			"renotify_interval": nullable(str("Duration such as \"6h\"; null for the default.")),
			"active":            obj{"type": "boolean"},
		}}},
	ok: 200, okDesc: "The rule as changed.", okSchema: ruleSchema,
	errors: []int{400, 403, 404, 406, 413, 415, 503},
}

var opDeleteRule = operation{
	id: "deleteAlertRule", tag: "alerts", summary: "Delete an alert rule (manage_notifications)",
	description: "Its unresolved alerts are resolved without notification and keep their history (rule_id null). Audited.",
	params:      []paramSpec{alertIDPathParam},
	ok:          204, okDesc: "Deleted.",
	errors: []int{400, 403, 404, 503},
}

var opListAlerts = operation{
	id: "listAlerts", tag: "alerts", summary: "Alerts of the points the caller can read, newest first",
	params: []paramSpec{
		{name: "point", in: "query", description: "Point code; every point the caller can read when absent.",
			schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}},
		{name: "state", in: "query", description: "open, acknowledged, resolved, or unresolved (open and acknowledged).",
			schema: obj{"type": "string", "enum": []string{"open", "acknowledged", "resolved", "unresolved"}}},
		{name: "before", in: "query", description: "Only alerts with a smaller id: the last id of the previous page.",
			schema: obj{"type": "integer", "format": "int64", "minimum": 1}},
		{name: "page_size", in: "query", description: "Alerts per page: 1 to 1000; default 100.",
			schema: obj{"type": "integer", "minimum": 1, "maximum": 1000}},
	},
	ok: 200, okDesc: "The alerts.", okSchema: listOf(alertSchema),
	errors: []int{400, 404, 406, 503},
}

var opAcknowledgeAlert = operation{
	id: "acknowledgeAlert", tag: "alerts", summary: "Acknowledge an alert (manage_notifications)",
	description: "An acknowledged alert is not re-notified; it still resolves when its condition clears. " +
		"Acknowledging it again changes nothing; a resolved alert is 409. Audited.",
	params: []paramSpec{alertIDPathParam},
	ok:     200, okDesc: "The alert.", okSchema: alertSchema,
	errors: []int{400, 403, 404, 406, 409, 503},
}
