package timescale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

// jsonRow is the test's record encoding; production uses Avro.
func jsonRow(b []byte) (timescale.Row, error) {
	var r timescale.Row
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	if r.Point == "" {
		return r, fmt.Errorf("no point")
	}
	return r, nil
}

var base = time.Date(2026, 5, 17, 14, 0, 0, 0, time.UTC)

func records(t *testing.T, partition int32, from, n int, point string) []pipeline.Record {
	t.Helper()
	var out []pipeline.Record
	for i := from; i < from+n; i++ {
		raw := float64(i) * 3.6
		b, err := json.Marshal(timescale.Row{Time: base.Add(time.Duration(i) * time.Minute), Point: point, Variable: "flow",
			Value: float64(i), Device: "dev-" + point, RawValue: &raw})
		require.NoError(t, err)
		out = append(out, pipeline.Record{Topic: "readings", Partition: partition, Offset: int64(i), Value: b})
	}
	return out
}

type deadLog struct {
	mu   sync.Mutex
	recs []pipeline.Record
	errs []error
}

func (d *deadLog) fn(_ context.Context, rec pipeline.Record, err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recs = append(d.recs, rec)
	d.errs = append(d.errs, err)
	return nil
}

func newWriter(t *testing.T) (*timescale.Writer, *pgxpool.Pool) {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	_, err := timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	w, err := timescale.NewWriter(ctx, pool, jsonRow, prometheus.NewRegistry(), quiet)
	require.NoError(t, err)
	return w, pool
}

func count(t *testing.T, pool *pgxpool.Pool, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM readings "+where, args...).Scan(&n))
	return n
}

func nextOf(recs []pipeline.Record) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	for _, r := range recs {
		if out[r.Topic] == nil {
			out[r.Topic] = map[int32]int64{}
		}
		out[r.Topic][r.Partition] = max(out[r.Topic][r.Partition], r.Offset+1)
	}
	return out
}

func TestWriterStoresRowsAndOffsetsIntegration(t *testing.T) {
	w, pool := newWriter(t)
	ctx := testenv.Context(t, time.Minute)
	var dead deadLog
	recs := append(records(t, 0, 0, 100, "P1"), records(t, 1, 0, 50, "P2")...)
	require.NoError(t, w.Write(ctx, "g", recs, nextOf(recs), dead.fn))
	require.Equal(t, 150, count(t, pool, ""))
	require.Empty(t, dead.recs)

	offs, err := w.Offsets(ctx, "g", "readings", []int32{0, 1, 2})
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{0: 100, 1: 50}, offs)

	var device string
	var raw float64
	require.NoError(t, pool.QueryRow(ctx, `SELECT device, raw_value FROM readings WHERE point = 'P1' AND time = $1`, base.Add(10*time.Minute)).Scan(&device, &raw))
	require.Equal(t, "dev-P1", device)
	require.InDelta(t, 36.0, raw, 1e-9)
}

func TestWriterMergesReplaysIntegration(t *testing.T) {
	w, pool := newWriter(t)
	ctx := testenv.Context(t, time.Minute)
	var dead deadLog
	first := records(t, 0, 0, 100, "P1")
	require.NoError(t, w.Write(ctx, "g", first, nextOf(first), dead.fn))

	// A replay of the same records, and one that overlaps by half: no error,
	// no duplicate, the new half stored.
	require.NoError(t, w.Write(ctx, "g", first, nextOf(first), dead.fn))
	require.Equal(t, 100, count(t, pool, ""))
	overlap := records(t, 0, 50, 100, "P1")
	require.NoError(t, w.Write(ctx, "g", overlap, nextOf(overlap), dead.fn))
	require.Equal(t, 150, count(t, pool, ""))

	// Duplicates inside one batch are stored once.
	dup := append(records(t, 0, 200, 10, "P1"), records(t, 0, 200, 10, "P1")...)
	require.NoError(t, w.Write(ctx, "g", dup, nextOf(dup), dead.fn))
	require.Equal(t, 160, count(t, pool, ""))
	require.Empty(t, dead.recs)
}

func TestWriterIsolatesPoisonRowsIntegration(t *testing.T) {
	w, pool := newWriter(t)
	ctx := testenv.Context(t, time.Minute)
	var dead deadLog
	recs := records(t, 0, 0, 64, "P1")
	// A NUL byte is refused by PostgreSQL's text type (SQLSTATE 22021).
	poison := records(t, 0, 17, 1, "bad\x00point")[0]
	poison.Offset = 64
	undecodable := pipeline.Record{Topic: "readings", Partition: 0, Offset: 65, Value: []byte("not json")}
	batch := append(append(recs[:30:30], poison), recs[30:]...)
	batch = append(batch, undecodable)
	require.NoError(t, w.Write(ctx, "g", batch, nextOf(batch), dead.fn))
	require.Equal(t, 64, count(t, pool, ""), "every good row is stored")
	require.Len(t, dead.recs, 2)
	reasons := map[string]int64{}
	for i, r := range dead.recs {
		reasons[pipeline.Reason(dead.errs[i])] = r.Offset
	}
	require.Equal(t, map[string]int64{"refused_by_database": 64, "bad_record": 65}, reasons)
	offs, err := w.Offsets(ctx, "g", "readings", []int32{0})
	require.NoError(t, err)
	require.Equal(t, int64(66), offs[0], "offsets move past dead-lettered records")

	// The poison row meeting stored rows (merge path) is isolated too.
	dead = deadLog{}
	require.NoError(t, w.Write(ctx, "g", batch, nextOf(batch), dead.fn))
	require.Equal(t, 64, count(t, pool, ""))
	require.Len(t, dead.recs, 2)
}

func TestWriterOffsetsOnlyMoveForwardIntegration(t *testing.T) {
	w, _ := newWriter(t)
	ctx := testenv.Context(t, time.Minute)
	var dead deadLog
	late := records(t, 0, 0, 10, "P1")
	ahead := records(t, 0, 10, 10, "P1")
	require.NoError(t, w.Write(ctx, "g", ahead, nextOf(ahead), dead.fn))
	// A consumer that lost the partition writes an older batch afterwards.
	require.NoError(t, w.Write(ctx, "g", late, nextOf(late), dead.fn))
	offs, err := w.Offsets(ctx, "g", "readings", []int32{0})
	require.NoError(t, err)
	require.Equal(t, int64(20), offs[0])
	other, err := w.Offsets(ctx, "other-group", "readings", []int32{0})
	require.NoError(t, err)
	require.Empty(t, other, "offsets are per consumer group")
}

func TestWriterPlainPartitionsIntegration(t *testing.T) {
	w, pool := newWriter(t)
	ctx := testenv.Context(t, time.Minute)
	mode, err := timescale.Status(ctx, pool)
	require.NoError(t, err)
	if mode.Mode != timescale.ModePostgres {
		t.Skip("database has timescaledb: chunks are created by the extension")
	}
	old := time.Date(2021, 2, 3, 4, 5, 6, 0, time.UTC)
	b, _ := json.Marshal(timescale.Row{Time: old, Point: "P9", Variable: "level", Value: 3})
	rec := []pipeline.Record{{Topic: "readings", Value: b}}
	var dead deadLog
	require.NoError(t, w.Write(ctx, "g", rec, nextOf(rec), dead.fn))
	var part string
	require.NoError(t, pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM readings WHERE point = 'P9'`).Scan(&part))
	require.Contains(t, part, "readings_p202102", "a month with no partition gets one, not the default")
}

func TestWriterTransientErrorIntegration(t *testing.T) {
	// A writer whose statements give up after 300ms waiting for a lock, and
	// a migration holding readings locked: the write fails with SQLSTATE
	// 55P03, which must be transient (retried), never dead-lettered.
	cfg := testenv.Database(t)
	ctx := testenv.Context(t, time.Minute)
	pool, err := pgxpool.New(ctx, cfg.URL.Reveal()+"&lock_timeout=300")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = timescale.Migrate(ctx, pool, quiet)
	require.NoError(t, err)
	w, err := timescale.NewWriter(ctx, pool, jsonRow, prometheus.NewRegistry(), quiet)
	require.NoError(t, err)

	locker, err := pgxpool.New(ctx, cfg.URL.Reveal())
	require.NoError(t, err)
	t.Cleanup(locker.Close)
	tx, err := locker.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE readings IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	var dead deadLog
	recs := records(t, 0, 0, 5, "P1")
	err = w.Write(ctx, "g", recs, nextOf(recs), dead.fn)
	require.Error(t, err)
	require.True(t, pipeline.IsTransient(err), "a lock timeout is transient: %v", err)
	require.Empty(t, dead.recs, "transient errors never reach the DLQ")

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, w.Write(ctx, "g", recs, nextOf(recs), dead.fn))
	require.Equal(t, 5, count(t, pool, ""))
}
