package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/compliance"
)

// Slot statuses (compliance_submissions.status).
const (
	StatusPending   = "PENDING"
	StatusSent      = "SENT"
	StatusConfirmed = "CONFIRMED"
	StatusRejected  = "REJECTED"
	StatusError     = "ERROR"
	StatusMissing   = "MISSING"
)

// Statuses lists every status.
var Statuses = []string{StatusPending, StatusSent, StatusConfirmed, StatusRejected, StatusError, StatusMissing}

// dataJSON is compliance_submissions.data and .correction: the values to
// report, canonical units, null when absent.
type dataJSON struct {
	Flow      *float64 `json:"flow"`
	Totalizer *float64 `json:"totalizer"`
	Level     *float64 `json:"level"`
}

func encodeValues(v compliance.Values) (string, error) {
	b, err := json.Marshal(dataJSON{Flow: v.Flow, Totalizer: v.Totalizer, Level: v.Level})
	return string(b), err
}

func decodeValues(b []byte) (*compliance.Values, error) {
	if b == nil {
		return nil, nil
	}
	var d dataJSON
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decoding slot data: %w", err)
	}
	return &compliance.Values{Flow: d.Flow, Totalizer: d.Totalizer, Level: d.Level}, nil
}

// previousSlot returns the slot of freq before t (t's period start).
func previousSlot(freq string, loc *time.Location, t time.Time) time.Time {
	span := map[string]time.Duration{
		compliance.Hourly:     3 * time.Hour,
		compliance.Daily:      50 * time.Hour,
		compliance.Monthly:    33 * 24 * time.Hour,
		compliance.Semiannual: 190 * 24 * time.Hour,
	}[freq]
	if span == 0 {
		return t.Add(-time.Hour)
	}
	slots := compliance.SlotsBetween(freq, loc, t.Add(-span), t)
	if len(slots) == 0 {
		return t.Add(-span)
	}
	return slots[len(slots)-1]
}

// activeConfig is what slot maintenance needs of a config.
type activeConfig struct {
	id                  int64
	point, source, zone string
	freq                string
	start               time.Time
	end                 *time.Time
	minSlot, maxSlot    *time.Time
}

// EnsureSlots creates the PENDING slots (no data) of every config of an
// active source, for each instant of its frequency in its source's zone,
// from the config's start date but no earlier than now-back, up to now+ahead
// and no later than its end date. It returns how many it created. It is
// idempotent and cheap when nothing is missing: only the ranges before a
// config's first slot and after its last are filled.
func (s *Store) EnsureSlots(ctx context.Context, now time.Time, ahead, back time.Duration) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.id, c.point, c.source, src.time_zone,
			coalesce(c.config->>'frequency', ''), coalesce(c.config->>'standard', ''), c.start_date, c.end_date,
			(SELECT min(slot_at) FROM compliance_submissions s WHERE s.config_id = c.id),
			(SELECT max(slot_at) FROM compliance_submissions s WHERE s.config_id = c.id)
		FROM compliance_configs c JOIN compliance_sources src ON src.code = c.source
		WHERE src.active AND (c.end_date IS NULL OR c.end_date >= ($1::timestamptz - interval '2 days')::date)
			AND c.start_date <= ($2::timestamptz + interval '2 days')::date`,
		now.Add(-back), now.Add(ahead))
	if err != nil {
		return 0, fmt.Errorf("reading active compliance configs: %w", err)
	}
	cfgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (activeConfig, error) {
		var c activeConfig
		var standard string
		err := r.Scan(&c.id, &c.point, &c.source, &c.zone, &c.freq, &standard, &c.start, &c.end, &c.minSlot, &c.maxSlot)
		c.freq = compliance.Params{Frequency: c.freq, Standard: standard}.Normalized().Frequency
		return c, err
	})
	if err != nil {
		return 0, fmt.Errorf("reading active compliance configs: %w", err)
	}
	created := 0
	for _, c := range cfgs {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			return created, fmt.Errorf("config %d: time zone %q: %w", c.id, c.zone, err)
		}
		from := localMidnight(c.start, loc)
		if lo := now.Add(-back); from.Before(lo) {
			from = lo
		}
		to := now.Add(ahead)
		if c.end != nil {
			if e := localMidnight(*c.end, loc); e.Before(to) {
				to = e
			}
		}
		var slots []time.Time
		if c.minSlot == nil {
			slots = compliance.SlotsBetween(c.freq, loc, from, to)
		} else {
			slots = compliance.SlotsBetween(c.freq, loc, from, minTime(*c.minSlot, to))
			slots = append(slots, compliance.SlotsBetween(c.freq, loc, maxTime(c.maxSlot.Add(time.Nanosecond), from), to)...)
		}
		if len(slots) == 0 {
			continue
		}
		n, err := s.insertSlots(ctx, c, loc, slots)
		created += n
		if err != nil {
			return created, err
		}
	}
	return created, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// localMidnight returns the first instant of the calendar day d (held as
// midnight UTC) in loc.
func localMidnight(d time.Time, loc *time.Location) time.Time {
	y, m, dd := d.Date()
	return time.Date(y, m, dd, 0, 0, 0, 0, loc)
}

func (s *Store) insertSlots(ctx context.Context, c activeConfig, loc *time.Location, slots []time.Time) (int, error) {
	starts := make([]time.Time, len(slots))
	for i, t := range slots {
		if i > 0 {
			starts[i] = slots[i-1]
		} else {
			starts[i] = previousSlot(c.freq, loc, t)
		}
		slots[i] = t.UTC()
		starts[i] = starts[i].UTC()
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO compliance_submissions (config_id, point, source, slot_at, period_start, period_end)
		SELECT $1, $2, $3, t, p, t FROM unnest($4::timestamptz[], $5::timestamptz[]) AS u (t, p)
		ON CONFLICT (config_id, slot_at) DO NOTHING`, c.id, c.point, c.source, slots, starts)
	if err != nil {
		return 0, fmt.Errorf("creating %d slots of config %d: %w", len(slots), c.id, err)
	}
	return int(tag.RowsAffected()), nil
}

// FillResult says what FillSlot did.
type FillResult string

// FillSlot results.
const (
	// Filled: the slot's data was set or replaced by a higher version.
	Filled FillResult = "filled"
	// Corrected: the slot was already sent or confirmed; the higher
	// version was recorded as its correction and will not be sent unless a
	// resubmission is requested.
	Corrected FillResult = "corrected"
	// Stale: the slot already holds this version or a higher one (a
	// duplicate or a partial re-emission): nothing changed.
	Stale FillResult = "stale"
)

// FillSlot records the values of the slot of config configID at slotAt
// (created if EnsureSlots has not yet), keeping the highest version: data
// is replaced only by a higher version and only while the slot is PENDING,
// ERROR, REJECTED or MISSING. A REJECTED slot whose rejection was local
// (invalid data) goes back to PENDING with the new data; a MISSING one
// keeps its status (a resubmission sends it). After SENT or CONFIRMED a
// higher version with other values goes to the correction column, never
// resent automatically. Idempotent: the same (slot, version) twice changes nothing.
// ErrInvalid when slotAt is not a slot of the config's frequency or is out
// of its dates; ErrNotFound when the config does not exist.
func (s *Store) FillSlot(ctx context.Context, configID int64, slotAt time.Time, v compliance.Values, version int) (FillResult, error) {
	data, err := encodeValues(v)
	if err != nil {
		return "", fmt.Errorf("encoding slot values: %w", err)
	}
	slotAt = slotAt.UTC()
	var res FillResult
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := getConfig(ctx, tx, configID, "")
		if err != nil {
			return err
		}
		src, err := getSource(ctx, tx, c.Source)
		if err != nil {
			return err
		}
		loc, err := src.Location()
		if err != nil {
			return err
		}
		freq := c.Params.Normalized().Frequency
		if !compliance.IsSlot(freq, loc, slotAt) {
			return fmt.Errorf("%w: %s is not a %s slot of %s in %s", ErrInvalid, slotAt.Format(time.RFC3339), freq, c.Source, src.TimeZone)
		}
		if !c.Covers(slotAt, loc) {
			return fmt.Errorf("%w: %s is outside the dates of %s", ErrInvalid, slotAt.Format(time.RFC3339), configWhat(c.ID))
		}
		_, err = tx.Exec(ctx, `INSERT INTO compliance_submissions (config_id, point, source, slot_at, period_start, period_end, data, data_version)
			VALUES ($1, $2, $3, $4, $5, $4, $6::jsonb, $7) ON CONFLICT (config_id, slot_at) DO NOTHING`,
			c.ID, c.Point, c.Source, slotAt, previousSlot(freq, loc, slotAt).UTC(), data, version)
		if err != nil {
			return fmt.Errorf("creating slot %s of %s: %w", slotAt.Format(time.RFC3339), configWhat(c.ID), err)
		}
		var id int64
		var status string
		var cur int
		var corr *int
		var hasData bool
		var lastOutcome *string
		var same bool
		err = tx.QueryRow(ctx, `SELECT id, status, data_version, correction_version, data IS NOT NULL, last_outcome,
				coalesce(data = $3::jsonb, false)
			FROM compliance_submissions WHERE config_id = $1 AND slot_at = $2 FOR UPDATE`, c.ID, slotAt, data).
			Scan(&id, &status, &cur, &corr, &hasData, &lastOutcome, &same)
		if err != nil {
			return fmt.Errorf("reading slot %s of %s: %w", slotAt.Format(time.RFC3339), configWhat(c.ID), err)
		}
		switch status {
		case StatusPending, StatusError, StatusRejected, StatusMissing:
			if hasData && version <= cur {
				res = Stale
				return nil
			}
			newStatus := status
			if status == StatusRejected && lastOutcome != nil && *lastOutcome == string(compliance.Invalid) {
				newStatus = StatusPending
			}
			_, err = tx.Exec(ctx, `UPDATE compliance_submissions SET data = $2::jsonb, data_version = $3, status = $4,
				reason = CASE WHEN $4 <> status THEN NULL ELSE reason END,
				next_attempt_at = CASE WHEN $4 <> status THEN NULL ELSE next_attempt_at END,
				updated_at = now() WHERE id = $1`, id, data, version, newStatus)
			res = Filled
		default: // SENT, CONFIRMED: the data that went out stays.
			// Equal values are no correction (e.g. the record of a slot
			// filled from the readings table before it arrived).
			if version <= cur || (corr != nil && version <= *corr) || same {
				res = Stale
				return nil
			}
			_, err = tx.Exec(ctx, `UPDATE compliance_submissions SET correction = $2::jsonb, correction_version = $3,
				updated_at = now() WHERE id = $1`, id, data, version)
			res = Corrected
		}
		if err != nil {
			return fmt.Errorf("filling slot %d: %w", id, err)
		}
		return nil
	})
	return res, err
}

// Covers reports whether the slot instant t falls in c's dates, read in
// loc (the source's zone).
func (c Config) Covers(t time.Time, loc *time.Location) bool {
	y, m, d := t.In(loc).Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return !day.Before(c.StartDate) && (c.EndDate == nil || day.Before(*c.EndDate))
}

// WriteOff sets MISSING every PENDING slot without data whose instant is
// older than now-after (submit.write_off_after), with a reason, and
// returns how many.
func (s *Store) WriteOff(ctx context.Context, now time.Time, after time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE compliance_submissions SET status = 'MISSING',
			reason = 'no data ' || $2 || ' after the slot: written off', next_attempt_at = NULL, updated_at = now()
		WHERE status = 'PENDING' AND data IS NULL AND slot_at < $1`, now.Add(-after), after.String())
	if err != nil {
		return 0, fmt.Errorf("writing off slots without data: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// ConfigsForSlot returns the configs of point for source whose frequency
// has a slot at t (in the source's zone) and whose dates cover it, with the
// source. The submit stage uses it to route a compliance record.
func (s *Store) ConfigsForSlot(ctx context.Context, point string, t time.Time) ([]SlotConfig, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.id, c.point, c.source, c.config, c.credentials IS NOT NULL, c.start_date, c.end_date, c.created_at,
			c.updated_at, src.code, src.name, src.protocol, src.endpoint, src.time_zone, src.variables, src.required_schema,
			src.settings, (extract(epoch FROM src.min_interval) * 1000000)::bigint,
			(extract(epoch FROM src.request_timeout) * 1000000)::bigint,
			(extract(epoch FROM src.retry_rejected_after) * 1000000)::bigint, src.max_attempts, src.active
		FROM compliance_configs c JOIN compliance_sources src ON src.code = c.source
		WHERE c.point = $1 AND src.active
			AND c.start_date <= ($2::timestamptz + interval '1 day')::date
			AND (c.end_date IS NULL OR c.end_date >= ($2::timestamptz - interval '1 day')::date)`, point, t)
	if err != nil {
		return nil, fmt.Errorf("reading the compliance configs of %s: %w", point, err)
	}
	defer rows.Close()
	var out []SlotConfig
	for rows.Next() {
		var sc SlotConfig
		var params []byte
		var end *time.Time
		var schema, settings []byte
		var minI, timeout, retry int64
		c, src := &sc.Config, &sc.Source
		if err := rows.Scan(&c.ID, &c.Point, &c.Source, &params, &c.HasCredentials, &c.StartDate, &end, &c.CreatedAt, &c.UpdatedAt,
			&src.Code, &src.Name, &src.Protocol, &src.Endpoint, &src.TimeZone, &src.Variables, &schema, &settings,
			&minI, &timeout, &retry, &src.MaxAttempts, &src.Active); err != nil {
			return nil, fmt.Errorf("reading the compliance configs of %s: %w", point, err)
		}
		c.StartDate = day(c.StartDate)
		if end != nil {
			e := day(*end)
			c.EndDate = &e
		}
		if err := json.Unmarshal(params, &c.Params); err != nil {
			return nil, fmt.Errorf("decoding config %d: %w", c.ID, err)
		}
		src.Schema, src.Settings = schema, settings
		src.MinInterval, src.RequestTimeout, src.RetryRejectedAfter = fromMicros(minI), fromMicros(timeout), fromMicros(retry)
		loc, err := src.Location()
		if err != nil {
			return nil, err
		}
		if compliance.IsSlot(c.Params.Normalized().Frequency, loc, t) && c.Covers(t, loc) {
			out = append(out, sc)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the compliance configs of %s: %w", point, err)
	}
	return out, nil
}

// SlotConfig is a config with its source.
type SlotConfig struct {
	Config Config
	Source compliance.Source
}
