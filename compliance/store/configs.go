package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/compliance"
)

// DateLayout is how config dates are written (and parsed by the API).
const DateLayout = time.DateOnly

// Config is one row of compliance_configs: a point reports to a source
// from StartDate (inclusive) to EndDate (exclusive; nil = open-ended).
// Dates are calendar days in the source's time zone, held as midnight UTC
// of that day. The credentials are never returned: HasCredentials says
// whether any are stored.
type Config struct {
	ID             int64
	Point          string
	Source         string
	Params         compliance.Params
	HasCredentials bool
	StartDate      time.Time
	EndDate        *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// NewConfig is what CreateConfig takes.
type NewConfig struct {
	Point  string
	Source string
	// Params are validated for the source (compliance.Params.Validate) and
	// stored normalized.
	Params compliance.Params
	// Credentials are sealed before they are stored; nil stores none.
	Credentials *compliance.Credentials
	// StartDate is required; EndDate (exclusive) is optional. Only the
	// calendar day of each counts.
	StartDate time.Time
	EndDate   *time.Time
}

// ConfigUpdate changes the fields that are set.
type ConfigUpdate struct {
	Params      *compliance.Params
	Credentials *compliance.Credentials
	// ClearCredentials removes the stored credentials.
	ClearCredentials bool
	StartDate        *time.Time
	EndDate          *time.Time
	// ClearEndDate makes the config open-ended.
	ClearEndDate bool
}

// ConfigFilter selects configs; zero fields select everything.
type ConfigFilter struct {
	// Points restricts to these points when non-nil (an empty non-nil
	// slice selects nothing): the API passes the points the caller sees.
	Points []string
	Point  string
	Source string
	// ActiveOn selects the configs whose range covers this day.
	ActiveOn *time.Time
}

// configAudit is a config's state in the audit log: never the
// credentials, only whether there are some.
type configAudit struct {
	ID          int64             `json:"id"`
	Point       string            `json:"point"`
	Source      string            `json:"source"`
	Config      compliance.Params `json:"config"`
	Credentials string            `json:"credentials"`
	StartDate   string            `json:"start_date"`
	EndDate     *string           `json:"end_date"`
}

func (c Config) audit() configAudit {
	a := configAudit{ID: c.ID, Point: c.Point, Source: c.Source, Config: c.Params, StartDate: c.StartDate.Format(DateLayout)}
	if c.HasCredentials {
		a.Credentials = "****"
	}
	if c.EndDate != nil {
		e := c.EndDate.Format(DateLayout)
		a.EndDate = &e
	}
	return a
}

// day returns t's calendar day (in t's own location) as midnight UTC.
func day(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func dateArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return day(*t).Format(DateLayout)
}

const configColumns = `id, point, source, config, credentials IS NOT NULL, start_date, end_date, created_at, updated_at`

func scanConfig(r pgx.Row) (Config, error) {
	var c Config
	var params []byte
	var end *time.Time
	err := r.Scan(&c.ID, &c.Point, &c.Source, &params, &c.HasCredentials, &c.StartDate, &end, &c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return c, err
	}
	c.StartDate = day(c.StartDate)
	if end != nil {
		e := day(*end)
		c.EndDate = &e
	}
	if err := json.Unmarshal(params, &c.Params); err != nil {
		return c, fmt.Errorf("decoding config %d: %w", c.ID, err)
	}
	return c, nil
}

func configWhat(id int64) string { return fmt.Sprintf("compliance config %d", id) }

// GetConfig returns the config with id; ErrNotFound when there is none.
func (s *Store) GetConfig(ctx context.Context, id int64) (Config, error) {
	return getConfig(ctx, s.pool, id, "")
}

func getConfig(ctx context.Context, q querier, id int64, lock string) (Config, error) {
	c, err := scanConfig(q.QueryRow(ctx, `SELECT `+configColumns+` FROM compliance_configs WHERE id = $1 `+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, fmt.Errorf("%s %w", configWhat(id), ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("reading %s: %w", configWhat(id), err)
	}
	return c, nil
}

// ListConfigs returns the configs matching f, ordered by point, source and
// start date.
func (s *Store) ListConfigs(ctx context.Context, f ConfigFilter) ([]Config, error) {
	sql := `SELECT ` + configColumns + ` FROM compliance_configs WHERE true`
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		sql += fmt.Sprintf(" AND "+cond, len(args))
	}
	if f.Points != nil {
		add("point = ANY ($%d)", f.Points)
	}
	if f.Point != "" {
		add("point = $%d", f.Point)
	}
	if f.Source != "" {
		add("source = $%d", f.Source)
	}
	if f.ActiveOn != nil {
		add("daterange(start_date, end_date) @> $%d::date", dateArg(f.ActiveOn))
	}
	sql += " ORDER BY point, source, start_date, id"
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("listing compliance configs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Config, error) { return scanConfig(r) })
	if err != nil {
		return nil, fmt.Errorf("listing compliance configs: %w", err)
	}
	return out, nil
}

// seal returns the sealed credentials, or nil for nil.
func (s *Store) seal(c *compliance.Credentials) ([]byte, error) {
	if c == nil {
		return nil, nil
	}
	if s.sealer == nil {
		return nil, fmt.Errorf("%w: credentials cannot be stored: compliance.credentials_key is not set", ErrInvalid)
	}
	b, err := s.sealer.Seal(*c)
	if err != nil {
		return nil, fmt.Errorf("sealing credentials: %w", err)
	}
	return b, nil
}

// OpenCredentials opens sealed credentials (the submitter's Due.Sealed);
// nil or empty opens as the zero Credentials.
func (s *Store) OpenCredentials(sealed []byte) (compliance.Credentials, error) {
	if len(sealed) == 0 {
		return compliance.Credentials{}, nil
	}
	if s.sealer == nil {
		return compliance.Credentials{}, errors.New("opening credentials: compliance.credentials_key is not set")
	}
	return s.sealer.Open(sealed)
}

// checkConfig validates params and dates for src and returns the
// normalized params.
func checkConfig(src compliance.Source, p compliance.Params, start time.Time, end *time.Time) (compliance.Params, error) {
	if start.IsZero() {
		return p, fmt.Errorf("%w: start_date is required", ErrInvalid)
	}
	if end != nil && !day(*end).After(day(start)) {
		return p, fmt.Errorf("%w: end_date %s must be after start_date %s", ErrInvalid,
			day(*end).Format(DateLayout), day(start).Format(DateLayout))
	}
	if err := p.Validate(src); err != nil {
		return p, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p.Normalized(), nil
}

// refuseOverlap locks (point, source) for the transaction and returns
// ErrConflict when another config of it overlaps [start, end).
func refuseOverlap(ctx context.Context, tx pgx.Tx, id int64, point, source string, start time.Time, end *time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('stackvps.compliance_configs.' || $1 || '|' || $2))`,
		point, source); err != nil {
		return fmt.Errorf("locking the configs of %s for %s: %w", point, source, err)
	}
	var other int64
	err := tx.QueryRow(ctx, `SELECT id FROM compliance_configs WHERE point = $1 AND source = $2 AND id <> $3
		AND daterange(start_date, end_date) && daterange($4::date, $5::date) ORDER BY start_date LIMIT 1`,
		point, source, id, dateArg(&start), dateArg(end)).Scan(&other)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking overlapping configs of %s for %s: %w", point, source, err)
	}
	return fmt.Errorf("%w: point %s already reports to %s in that period (config %d)", ErrConflict, point, source, other)
}

// CreateConfig creates a config and returns it, recording it in audit_log
// (without the credentials) in the same transaction. ErrInvalid names a
// bad field (params, dates, an unknown point or source); ErrConflict means
// another config of the point and source overlaps the dates. The store
// does not check permissions: the caller (the API) does (manage_compliance).
func (s *Store) CreateConfig(ctx context.Context, actor Actor, nc NewConfig) (Config, error) {
	var out Config
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		src, err := getSource(ctx, tx, nc.Source)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: source: unknown compliance source %q", ErrInvalid, nc.Source)
		}
		if err != nil {
			return nil, err
		}
		params, err := checkConfig(src, nc.Params, nc.StartDate, nc.EndDate)
		if err != nil {
			return nil, err
		}
		sealed, err := s.seal(nc.Credentials)
		if err != nil {
			return nil, err
		}
		if err := refuseOverlap(ctx, tx, 0, nc.Point, nc.Source, nc.StartDate, nc.EndDate); err != nil {
			return nil, err
		}
		pj, err := json.Marshal(params)
		if err != nil {
			return nil, fmt.Errorf("encoding config params: %w", err)
		}
		out, err = scanConfig(tx.QueryRow(ctx, `INSERT INTO compliance_configs (point, source, config, credentials, start_date, end_date)
			VALUES ($1, $2, $3::jsonb, $4, $5::date, $6::date) RETURNING `+configColumns,
			nc.Point, nc.Source, string(pj), sealed, dateArg(&nc.StartDate), dateArg(nc.EndDate)))
		if pgCode(err) == codeForeignKeyViolation {
			return nil, fmt.Errorf("%w: point: unknown catchment point %q", ErrInvalid, nc.Point)
		}
		if err != nil {
			return nil, fmt.Errorf("creating the config of %s for %s: %w", nc.Point, nc.Source, err)
		}
		if err := defaultComplianceRules(ctx, tx, actor, out.Point); err != nil {
			return nil, err
		}
		return &audit.Entry{Action: "compliance_config.create", EntityType: "compliance_config",
			EntityID: fmt.Sprint(out.ID), Point: out.Point, After: out.audit()}, nil
	})
	return out, err
}

// UpdateConfig applies u to the config with id and returns it, audited.
// Slots that fall out of a shortened range are deleted while nothing was
// attempted for them; slots with attempts stay (history).
func (s *Store) UpdateConfig(ctx context.Context, actor Actor, id int64, u ConfigUpdate) (Config, error) {
	var out Config
	err := s.change(ctx, actor, func(tx pgx.Tx) (*audit.Entry, error) {
		before, err := getConfig(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return nil, err
		}
		src, err := getSource(ctx, tx, before.Source)
		if err != nil {
			return nil, err
		}
		params, start, end := before.Params, before.StartDate, before.EndDate
		if u.Params != nil {
			params = *u.Params
		}
		if u.StartDate != nil {
			start = day(*u.StartDate)
		}
		if u.ClearEndDate {
			end = nil
		} else if u.EndDate != nil {
			e := day(*u.EndDate)
			end = &e
		}
		if params, err = checkConfig(src, params, start, end); err != nil {
			return nil, err
		}
		if err := refuseOverlap(ctx, tx, id, before.Point, before.Source, start, end); err != nil {
			return nil, err
		}
		pj, err := json.Marshal(params)
		if err != nil {
			return nil, fmt.Errorf("encoding config params: %w", err)
		}
		credMode := 0 // keep
		var sealed []byte
		switch {
		case u.Credentials != nil:
			if sealed, err = s.seal(u.Credentials); err != nil {
				return nil, err
			}
			credMode = 1 // replace
		case u.ClearCredentials:
			credMode = 2 // remove
		}
		out, err = scanConfig(tx.QueryRow(ctx, `UPDATE compliance_configs SET config = $2::jsonb, start_date = $3::date,
			end_date = $4::date, credentials = CASE $6::int WHEN 1 THEN $5::bytea WHEN 2 THEN NULL ELSE credentials END,
			updated_at = now() WHERE id = $1 RETURNING `+configColumns,
			id, string(pj), dateArg(&start), dateArg(end), sealed, credMode))
		if err != nil {
			return nil, fmt.Errorf("updating %s: %w", configWhat(id), err)
		}
		if err := pruneSlots(ctx, tx, out, src); err != nil {
			return nil, err
		}
		credChanged := u.Credentials != nil || (u.ClearCredentials && before.HasCredentials)
		ba, aa := before.audit(), out.audit()
		if credChanged {
			ba.Credentials, aa.Credentials = ba.Credentials+"(replaced)", aa.Credentials+"(new)"
		}
		return &audit.Entry{Action: "compliance_config.update", EntityType: "compliance_config",
			EntityID: fmt.Sprint(id), Point: out.Point, Before: ba, After: aa}, nil
	})
	return out, err
}

// EndConfig ends the config with id on end (exclusive: the last day
// reported is the day before), audited. See UpdateConfig for the slots.
func (s *Store) EndConfig(ctx context.Context, actor Actor, id int64, end time.Time) (Config, error) {
	return s.UpdateConfig(ctx, actor, id, ConfigUpdate{EndDate: &end})
}

// pruneSlots deletes the slots of c outside its range for which nothing
// was attempted.
func pruneSlots(ctx context.Context, tx pgx.Tx, c Config, src compliance.Source) error {
	_, err := tx.Exec(ctx, `DELETE FROM compliance_submissions WHERE config_id = $1 AND attempts = 0
		AND status IN ('PENDING', 'MISSING')
		AND NOT daterange($2::date, $3::date) @> (slot_at AT TIME ZONE $4)::date`,
		c.ID, dateArg(&c.StartDate), dateArg(c.EndDate), src.TimeZone)
	if err != nil {
		return fmt.Errorf("removing the slots out of %s's range: %w", configWhat(c.ID), err)
	}
	return nil
}

// defaultComplianceRules gives point, in tx, the alert rules
// compliance_missing and compliance_rejected (point-wide, warning and
// critical, default parameters) unless it has a rule of that kind already,
// so whoever is subscribed to those notification types hears of a missing
// or rejected slot without anybody having to think of a rule first. They
// are ordinary rules: changed or deleted through /api/alerts/rules/, and
// not created again for the point's next config. Each is audited.
func defaultComplianceRules(ctx context.Context, tx pgx.Tx, actor Actor, point string) error {
	for _, r := range []struct{ kind, severity string }{
		{"compliance_missing", "warning"},
		{"compliance_rejected", "critical"},
	} {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO alert_rules (point, kind, severity, created_by)
			SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM alert_rules WHERE point = $1 AND kind = $2)
			RETURNING id`, point, r.kind, r.severity, nullID(actor.UserID())).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating the default %s rule of %s: %w", r.kind, point, err)
		}
		if err := audit.Record(ctx, tx, audit.Entry{ActorUserID: actor.UserID(), Actor: actor.Actor(),
			Action: "alert_rule.create", EntityType: "alert_rule", EntityID: fmt.Sprint(id), Point: point,
			After: map[string]any{"id": id, "point": point, "kind": r.kind, "severity": r.severity, "params": map[string]any{},
				"active": true, "default_for": "compliance_config"}}); err != nil {
			return err
		}
	}
	return nil
}

// nullID is id, or NULL for 0 (the system or the command line).
func nullID(id int64) *int64 {
	if id == 0 {
		return nil
	}
	return &id
}
