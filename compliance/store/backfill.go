package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stackvps/stackvps/compliance"
)

// BackfillVersion is the data_version of values read from the readings
// table: below every compliance record's, so a record that arrives while
// the slot is still unsent replaces them.
const BackfillVersion = 0

// Backfilled is what one BackfillFromReadings round did.
type Backfilled struct {
	// Checked is the number of slots looked at, Filled those that got
	// values.
	Checked, Filled int
}

// BackfillFromReadings fills, from the readings table, PENDING slots that
// are still without data after has passed since their instant: the slots
// of a config created (or a date range widened) after its data arrived,
// whose compliance records went by before the slots existed, and the slots
// whose readings the aggregate stage refused as too late. The readings
// table is the record of what was measured; nothing is fabricated: a slot
// is filled only with readings that exist, by the rule of the aggregate
// stage (instant: the earliest reading of each variable in the minute
// starting at the slot instant; mean: the mean of flow and level over the
// hour before it, the totalizer still the instant's), and only once the
// point has a reading after that minute (the sink is past the slot, so the
// minute is complete). Each slot is looked at again no sooner than has
// later (data_checked_at), at most limit per round, oldest first. The
// values carry BackfillVersion.
func (s *Store) BackfillFromReadings(ctx context.Context, now time.Time, after time.Duration, limit int) (Backfilled, error) {
	var out Backfilled
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.config_id, s.point, s.slot_at, coalesce(c.config->>'value_mode', ''), src.variables
		FROM compliance_submissions s
		JOIN compliance_configs c ON c.id = s.config_id
		JOIN compliance_sources src ON src.code = s.source
		WHERE s.status = 'PENDING' AND s.data IS NULL AND s.slot_at < $1
			AND (s.data_checked_at IS NULL OR s.data_checked_at < $2)
		ORDER BY s.slot_at, s.id LIMIT $3`, now.Add(-after), now.Add(-after), limit)
	if err != nil {
		return out, fmt.Errorf("reading the slots without data: %w", err)
	}
	type slot struct {
		id, config int64
		point      string
		at         time.Time
		mode       string
		vars       []string
	}
	var todo []slot
	for rows.Next() {
		var sl slot
		if err := rows.Scan(&sl.id, &sl.config, &sl.point, &sl.at, &sl.mode, &sl.vars); err != nil {
			rows.Close()
			return out, fmt.Errorf("reading the slots without data: %w", err)
		}
		todo = append(todo, sl)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("reading the slots without data: %w", err)
	}
	for _, sl := range todo {
		out.Checked++
		v, ok, err := s.readingsAt(ctx, sl.point, sl.at, sl.mode, sl.vars)
		if err != nil {
			return out, err
		}
		if ok {
			res, err := s.FillSlot(ctx, sl.config, sl.at, v, BackfillVersion)
			switch {
			case errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound):
				// The config changed since: the slot is not its any more.
			case err != nil:
				return out, err
			case res == Filled:
				out.Filled++
				continue
			}
		}
		if _, err := s.pool.Exec(ctx, `UPDATE compliance_submissions SET data_checked_at = $2 WHERE id = $1`, sl.id, now); err != nil {
			return out, fmt.Errorf("recording the check of slot %d: %w", sl.id, err)
		}
	}
	return out, nil
}

// readingsAt returns the values of point at the slot instant at from the
// readings table, for the variables vars and the value mode; ok is false
// when the point has no reading after the slot's minute yet, or none of
// the variables has a value.
func (s *Store) readingsAt(ctx context.Context, point string, at time.Time, mode string, vars []string) (compliance.Values, bool, error) {
	var v compliance.Values
	var past bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM readings WHERE point = $1 AND time >= $2)`,
		point, at.Add(time.Minute)).Scan(&past); err != nil {
		return v, false, fmt.Errorf("reading %s after %s: %w", point, at.Format(time.RFC3339), err)
	}
	if !past {
		return v, false, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (variable) variable, value FROM readings
		WHERE point = $1 AND variable = ANY ($2) AND time >= $3 AND time < $3::timestamptz + interval '1 minute'
		ORDER BY variable, time`, point, vars, at)
	if err != nil {
		return v, false, fmt.Errorf("reading %s at %s: %w", point, at.Format(time.RFC3339), err)
	}
	found, err := collectValues(rows, &v)
	if err != nil {
		return v, false, fmt.Errorf("reading %s at %s: %w", point, at.Format(time.RFC3339), err)
	}
	if mode == compliance.ValueMean {
		v.Flow, v.Level = nil, nil
		means := slices.DeleteFunc(slices.Clone(vars), func(x string) bool { return x == compliance.VarTotalizer })
		rows, err := s.pool.Query(ctx, `SELECT variable, avg(value) FROM readings
			WHERE point = $1 AND variable = ANY ($2) AND time >= $3::timestamptz - interval '1 hour' AND time < $3
			GROUP BY variable`, point, means, at)
		if err != nil {
			return v, false, fmt.Errorf("reading %s's hour before %s: %w", point, at.Format(time.RFC3339), err)
		}
		n, err := collectValues(rows, &v)
		if err != nil {
			return v, false, fmt.Errorf("reading %s's hour before %s: %w", point, at.Format(time.RFC3339), err)
		}
		found = n + boolInt(v.Totalizer != nil)
	}
	return v, found > 0, nil
}

// collectValues sets the variables of rows (variable, value) in v and
// returns how many it set.
func collectValues(rows pgx.Rows, v *compliance.Values) (int, error) {
	defer rows.Close()
	n := 0
	for rows.Next() {
		var name string
		var value float64
		if err := rows.Scan(&name, &value); err != nil {
			return n, err
		}
		switch name {
		case compliance.VarFlow:
			v.Flow = &value
		case compliance.VarTotalizer:
			v.Totalizer = &value
		case compliance.VarLevel:
			v.Level = &value
		default:
			continue
		}
		n++
	}
	return n, rows.Err()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
