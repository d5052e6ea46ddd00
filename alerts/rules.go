package alerts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/stackvps/stackvps/accounts"
)

// Kind is what a rule checks.
type Kind string

// Rule kinds.
const (
	// KindThresholdAbove fires while the variable is above params.limit; it
	// clears at or below limit - deadband.
	KindThresholdAbove Kind = "threshold_above"
	// KindThresholdBelow fires while the variable is below params.limit; it
	// clears at or above limit + deadband.
	KindThresholdBelow Kind = "threshold_below"
	// KindRateOfChange fires while the change between consecutive readings
	// exceeds params.max_per_minute (absolute value, per minute of event
	// time).
	KindRateOfChange Kind = "rate_of_change"
	// KindDataGap fires when no reading of a variable (every variable of the
	// point when the rule has none) arrived for params.after.
	KindDataGap Kind = "data_gap"
	// KindStuck fires when the readings of the variable stayed within
	// params.tolerance of each other for params.window.
	KindStuck Kind = "stuck"
	// KindTotalizerReset fires on a totalizer reading flagged reset (quality
	// bit 8) or lower than the previous one without the rollover flag; it
	// clears once no reset was seen for params.clear_after of event time.
	KindTotalizerReset Kind = "totalizer_reset"
	// KindComplianceMissing fires while the point has compliance slots still
	// PENDING without data params.after (default submit.missing_after)
	// after their instant.
	KindComplianceMissing Kind = "compliance_missing"
	// KindComplianceRejected fires while the point has compliance slots
	// REJECTED by the regulator and last changed within params.within
	// (default 7 days).
	KindComplianceRejected Kind = "compliance_rejected"
)

// AllKinds returns every rule kind.
func AllKinds() []Kind {
	return []Kind{KindThresholdAbove, KindThresholdBelow, KindRateOfChange, KindDataGap, KindStuck,
		KindTotalizerReset, KindComplianceMissing, KindComplianceRejected}
}

// NotificationType is the point_notifications type a kind's notifications
// carry: users subscribed to it receive them.
func (k Kind) NotificationType() accounts.NotificationType {
	switch k {
	case KindThresholdAbove, KindThresholdBelow, KindRateOfChange:
		return accounts.NotifyThreshold
	case KindDataGap:
		return accounts.NotifyDataGap
	case KindStuck:
		return accounts.NotifyStuckSensor
	case KindTotalizerReset:
		return accounts.NotifyTotalizerReset
	case KindComplianceMissing:
		return accounts.NotifyComplianceMissing
	case KindComplianceRejected:
		return accounts.NotifyComplianceRejected
	}
	return ""
}

// PerReading reports whether the kind is judged on each reading (as
// opposed to periodically).
func (k Kind) PerReading() bool {
	switch k {
	case KindThresholdAbove, KindThresholdBelow, KindRateOfChange, KindStuck, KindTotalizerReset:
		return true
	}
	return false
}

// NeedsVariable reports whether a rule of the kind must name a variable.
func (k Kind) NeedsVariable() bool {
	switch k {
	case KindThresholdAbove, KindThresholdBelow, KindRateOfChange, KindStuck:
		return true
	}
	return false
}

// PointWide reports whether the kind is about the point as a whole (its
// rules take no variable).
func (k Kind) PointWide() bool { return k == KindComplianceMissing || k == KindComplianceRejected }

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Alert states.
const (
	StateOpen         = "open"
	StateAcknowledged = "acknowledged"
	StateResolved     = "resolved"
)

// Events of an alert, each notified.
const (
	EventOpened     = "opened"
	EventRenotified = "renotified"
	EventResolved   = "resolved"
)

// Params are a rule's parameters, parsed and validated for its kind. Fields
// that do not apply to the kind are zero.
type Params struct {
	// Limit is the threshold of threshold_above and threshold_below.
	Limit float64
	// Deadband is the hysteresis of thresholds: a firing threshold clears
	// only once the value is back past the limit by this much. Default 0.
	Deadband float64
	// MaxPerMinute is the largest allowed change per minute (rate_of_change).
	MaxPerMinute float64
	// After is how long without data (data_gap) or data (compliance_missing)
	// fires the rule. data_gap requires it; compliance_missing defaults to
	// submit.missing_after (zero here).
	After time.Duration
	// Window is how long values must stay flat (stuck).
	Window time.Duration
	// Tolerance is how far apart values may be and still count as flat
	// (stuck). Default 0: exactly equal.
	Tolerance float64
	// ClearAfter is how long without a reset clears totalizer_reset. Default
	// 1h.
	ClearAfter time.Duration
	// Within is how recent a rejection must be to count
	// (compliance_rejected). Default 7 days.
	Within time.Duration
}

// Defaults of optional parameters.
const (
	DefaultClearAfter = time.Hour
	DefaultWithin     = 7 * 24 * time.Hour
)

// FieldError is a validation error naming the field at fault ("variable",
// "params.limit"). It wraps ErrInvalid.
type FieldError struct {
	Field string
	Msg   string
}

// Error returns "field: message".
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// paramKeys are the keys each kind accepts in params.
var paramKeys = map[Kind][]string{
	KindThresholdAbove:     {"limit", "deadband"},
	KindThresholdBelow:     {"limit", "deadband"},
	KindRateOfChange:       {"max_per_minute"},
	KindDataGap:            {"after"},
	KindStuck:              {"window", "tolerance"},
	KindTotalizerReset:     {"clear_after"},
	KindComplianceMissing:  {"after"},
	KindComplianceRejected: {"within"},
}

// ParseParams validates raw (a JSON object, or empty for {}) for kind and
// returns it parsed. Errors are *FieldError naming "params.<key>" (or
// "params"). Durations are strings ("15m"); numbers must be finite.
func ParseParams(kind Kind, raw json.RawMessage) (Params, error) {
	keys, ok := paramKeys[kind]
	if !ok {
		return Params{}, invalid("kind", "unknown kind %q; want one of %s", kind, kindList())
	}
	var m map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) == 0 {
		m = map[string]json.RawMessage{}
	} else if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return Params{}, invalid("params", "must be a JSON object")
	}
	for k := range m {
		if !slices.Contains(keys, k) {
			return Params{}, invalid("params."+k, "unknown parameter for kind %s; it takes %s", kind, strings.Join(keys, ", "))
		}
	}
	var p Params
	num := func(key string, required bool, dst *float64, check func(float64) string) error {
		v, ok := m[key]
		if !ok {
			if required {
				return invalid("params."+key, "required for kind %s", kind)
			}
			return nil
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return invalid("params."+key, "must be a finite number")
		}
		if msg := check(f); msg != "" {
			return invalid("params."+key, "%s; got %v", msg, f)
		}
		*dst = f
		return nil
	}
	dur := func(key string, required bool, dst *time.Duration) error {
		v, ok := m[key]
		if !ok {
			if required {
				return invalid("params."+key, "required for kind %s (a duration such as \"15m\")", kind)
			}
			return nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return invalid("params."+key, "must be a duration string such as \"15m\"")
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return invalid("params."+key, "must be a positive duration such as \"15m\"; got %q", s)
		}
		*dst = d
		return nil
	}
	anyNum := func(float64) string { return "" }
	nonNeg := func(f float64) string {
		if f < 0 {
			return "must not be negative"
		}
		return ""
	}
	positive := func(f float64) string {
		if f <= 0 {
			return "must be positive"
		}
		return ""
	}
	var err error
	switch kind {
	case KindThresholdAbove, KindThresholdBelow:
		err = errors.Join(num("limit", true, &p.Limit, anyNum), num("deadband", false, &p.Deadband, nonNeg))
	case KindRateOfChange:
		err = num("max_per_minute", true, &p.MaxPerMinute, positive)
	case KindDataGap:
		err = dur("after", true, &p.After)
	case KindStuck:
		err = errors.Join(dur("window", true, &p.Window), num("tolerance", false, &p.Tolerance, nonNeg))
	case KindTotalizerReset:
		p.ClearAfter = DefaultClearAfter
		err = dur("clear_after", false, &p.ClearAfter)
	case KindComplianceMissing:
		err = dur("after", false, &p.After)
	case KindComplianceRejected:
		p.Within = DefaultWithin
		err = dur("within", false, &p.Within)
	}
	if err != nil {
		// The first problem names its field; errors.Join would hide the type.
		var fe *FieldError
		if errors.As(err, &fe) {
			return Params{}, fe
		}
		return Params{}, err
	}
	return p, nil
}

func kindList() string {
	var s []string
	for _, k := range AllKinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// Rule is one row of alert_rules.
type Rule struct {
	ID    int64
	Point string
	// Variable is empty for rules about every variable of the point
	// (data_gap) or about the point as a whole (compliance kinds).
	Variable string
	Kind     Kind
	// RawParams is params as stored; Params the same, parsed.
	RawParams json.RawMessage
	Params    Params
	Severity  string
	// RenotifyInterval is zero when the rule takes alert.renotify_interval.
	RenotifyInterval time.Duration
	Active           bool
	// CreatedBy is the user who created it; 0 for the system or one since
	// deleted.
	CreatedBy int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// normalize validates r for storing: kind, variable, severity, params and
// renotify interval. It fills defaults (severity warning, totalizer_reset's
// variable totalizer) and returns the normalized rule.
func (r Rule) normalize() (Rule, error) {
	if _, ok := paramKeys[r.Kind]; !ok {
		return r, invalid("kind", "unknown kind %q; want one of %s", r.Kind, kindList())
	}
	r.Variable = strings.TrimSpace(r.Variable)
	switch {
	case r.Kind.NeedsVariable() && r.Variable == "":
		return r, invalid("variable", "required for kind %s (flow, totalizer, level, ...)", r.Kind)
	case r.Kind.PointWide() && r.Variable != "":
		return r, invalid("variable", "kind %s is about the whole point and takes no variable", r.Kind)
	case r.Kind == KindTotalizerReset && r.Variable == "":
		r.Variable = "totalizer"
	}
	if r.Variable != "" && !variablePattern(r.Variable) {
		return r, invalid("variable", "%q is not a variable name (lowercase letters, digits and _)", r.Variable)
	}
	if r.Severity == "" {
		r.Severity = SeverityWarning
	}
	if !slices.Contains([]string{SeverityInfo, SeverityWarning, SeverityCritical}, r.Severity) {
		return r, invalid("severity", "must be info, warning or critical; got %q", r.Severity)
	}
	if r.RenotifyInterval < 0 {
		return r, invalid("renotify_interval", "must be positive")
	}
	p, err := ParseParams(r.Kind, r.RawParams)
	if err != nil {
		return r, err
	}
	r.Params = p
	if len(bytes.TrimSpace(r.RawParams)) == 0 {
		r.RawParams = json.RawMessage(`{}`)
	}
	return r, nil
}

func variablePattern(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Alert is one row of alerts.
type Alert struct {
	ID int64
	// RuleID is 0 once the rule was deleted.
	RuleID         int64
	Point          string
	Variable       string
	Kind           Kind
	Severity       string
	State          string
	OpenedAt       time.Time
	AcknowledgedAt *time.Time
	AcknowledgedBy int64
	ResolvedAt     *time.Time
	LastValue      *float64
	LastSeenAt     time.Time
	LastNotifiedAt time.Time
	NotifyCount    int
	Details        json.RawMessage
}
