package submit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/stages/aggregate"
)

// Decoder decodes compliance.records values
// (schemas.Codec[schemas.ComplianceRecord]). An error wrapping
// schemas.ErrBadRecord is permanent; any other is transient (the registry
// is unreachable).
type Decoder interface {
	Decode(b []byte, v *schemas.ComplianceRecord) error
}

// Slots is what the processor needs of the store.
type Slots interface {
	ConfigsForSlot(ctx context.Context, point string, t time.Time) ([]store.SlotConfig, error)
	FillSlot(ctx context.Context, configID int64, slotAt time.Time, v compliance.Values, version int) (store.FillResult, error)
}

// processor routes compliance records to the slots of the configs they
// report (see the package documentation, "Filling slots").
type processor struct {
	dec   Decoder
	slots Slots
	met   *metrics
	s     *Submit
}

// Process fills, for one compliance record, the slot at its period_end of
// every active config of its point whose frequency has a slot there. It
// produces nothing. A record that cannot be decoded is permanent (DLQ);
// database errors are transient (retried). Idempotent: a record consumed
// again is a stale fill.
func (p *processor) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	var cr schemas.ComplianceRecord
	if err := p.dec.Decode(rec.Value, &cr); err != nil {
		if errors.Is(err, schemas.ErrBadRecord) {
			p.met.records.WithLabelValues("bad_record").Inc()
			return nil, pipeline.Permanent("bad_record", err)
		}
		return nil, pipeline.Transient(err)
	}
	var stats aggregate.HourStats
	if b, ok := rec.Header(aggregate.HeaderHourStats); ok {
		s, err := aggregate.ParseHourStats(b)
		if err != nil {
			p.met.records.WithLabelValues("bad_record").Inc()
			return nil, pipeline.Permanent("bad_record", err)
		}
		stats = s
	}
	slotAt := cr.PeriodEnd.UTC()
	cfgs, err := p.slots.ConfigsForSlot(ctx, cr.Point, slotAt)
	if err != nil {
		return nil, pipeline.Transient(err)
	}
	routed := false
	for _, sc := range cfgs {
		if cr.Source != "" && cr.Source != aggregate.Source && cr.Source != sc.Source.Code {
			continue // a record meant for another source
		}
		v := Values(cr, stats, sc.Config.Params.Normalized().ValueMode, sc.Source)
		res, err := p.slots.FillSlot(ctx, sc.Config.ID, slotAt, v, int(cr.Version))
		if errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
			// The config changed between the two calls; the record does
			// not belong to it any more.
			p.s.log.Info("slot no longer exists for the record", "point", cr.Point, "config", sc.Config.ID, "slot", slotAt, "err", err)
			continue
		}
		if err != nil {
			return nil, pipeline.Transient(fmt.Errorf("filling slot %s of config %d: %w", slotAt.Format(time.RFC3339), sc.Config.ID, err))
		}
		routed = true
		p.met.filled.WithLabelValues(sc.Source.Code, string(res)).Inc()
		if res == store.Filled {
			p.s.wake(sc.Source.Code)
		}
		p.s.log.Debug("slot filled", "point", cr.Point, "source", sc.Source.Code, "config", sc.Config.ID,
			"slot", slotAt, "version", cr.Version, "result", res)
	}
	if routed {
		p.met.records.WithLabelValues("routed").Inc()
	} else {
		p.met.records.WithLabelValues("no_slot").Inc()
	}
	return nil, nil
}

// Values returns the values a config with valueMode reports for src from
// one compliance record and its hour statistics:
//   - instant: the record's flow and level when the record itself is
//     instant (the first reading of the one-minute bucket at the slot
//     instant); nil when the record holds means (an instant value cannot
//     be recovered from them, and nothing is fabricated).
//   - mean: the hour's mean from the statistics (avg) for flow and level,
//     or the record's values when the record itself holds means.
//
// The totalizer is always the record's (the counter at the slot instant).
// Only the variables src takes are kept.
func Values(cr schemas.ComplianceRecord, stats aggregate.HourStats, valueMode string, src compliance.Source) compliance.Values {
	var v compliance.Values
	v.Totalizer = cr.Totalizer
	switch {
	case valueMode == compliance.ValueMean:
		v.Flow, v.Level = mean(stats, aggregate.VariableFlow, cr.Flow, cr.ValueMode), mean(stats, aggregate.VariableLevel, cr.Level, cr.ValueMode)
	case cr.ValueMode != compliance.ValueMean:
		v.Flow, v.Level = cr.Flow, cr.Level
	}
	if !src.Takes(compliance.VarFlow) {
		v.Flow = nil
	}
	if !src.Takes(compliance.VarTotalizer) {
		v.Totalizer = nil
	}
	if !src.Takes(compliance.VarLevel) {
		v.Level = nil
	}
	return v
}

func mean(stats aggregate.HourStats, variable string, recValue *float64, recMode string) *float64 {
	if st, ok := stats[variable]; ok && st.Count > 0 {
		avg := st.Avg
		return &avg
	}
	if recMode == compliance.ValueMean {
		return recValue
	}
	return nil
}
