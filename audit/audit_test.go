package audit_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/sinks/timescale"
)

func newPool(t *testing.T) (context.Context, *pgxpool.Pool) {
	t.Helper()
	pool := testenv.Postgres(t)
	ctx := testenv.Context(t, time.Minute)
	_, err := timescale.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	return ctx, pool
}

func record(ctx context.Context, t *testing.T, pool *pgxpool.Pool, entries ...audit.Entry) error {
	t.Helper()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, e := range entries {
			if err := audit.Record(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestRecordAndListIntegration(t *testing.T) {
	t.Parallel()
	ctx, pool := newPool(t)
	type point struct {
		Code string `json:"code"`
	}
	require.NoError(t, record(ctx, t, pool,
		audit.Entry{ActorUserID: 7, Actor: "user:a@example.cl", Action: "point.create", EntityType: "point", EntityID: "P1",
			Point: "P1", After: point{"P1"}},
		audit.Entry{Actor: "cli:root", Action: "device.create", EntityType: "device", EntityID: "D1", Point: "P1",
			After: json.RawMessage(`{"id": "D1"}`), RequestID: "r1"},
	))
	require.NoError(t, record(audit.WithRequestID(ctx, "from-ctx"), t, pool,
		audit.Entry{Actor: "cli:root", Action: "user.delete", EntityType: "user", EntityID: "3", Before: map[string]int{"id": 3}},
	))

	all, err := audit.List(ctx, pool, audit.Filter{})
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, "user.delete", all[0].Action, "newest first")
	require.Equal(t, "from-ctx", all[0].RequestID)
	require.Nil(t, all[0].After, "nil is NULL")
	require.JSONEq(t, `{"id": 3}`, string(all[0].Before))
	require.Equal(t, "r1", all[1].RequestID)
	require.Zero(t, all[1].ActorUserID)
	require.Equal(t, int64(7), all[2].ActorUserID)
	require.JSONEq(t, `{"code": "P1"}`, string(all[2].After))
	require.Nil(t, all[2].Before)

	cases := []struct {
		name string
		f    audit.Filter
		want []string // actions
	}{
		{"by point", audit.Filter{Point: "P1"}, []string{"device.create", "point.create"}},
		{"by actor", audit.Filter{ActorUserID: 7}, []string{"point.create"}},
		{"by action", audit.Filter{Action: "user.delete"}, []string{"user.delete"}},
		{"by entity", audit.Filter{EntityType: "device", EntityID: "D1"}, []string{"device.create"}},
		{"limit", audit.Filter{Limit: 1}, []string{"user.delete"}},
		{"page", audit.Filter{BeforeID: all[0].ID, Limit: 1}, []string{"device.create"}},
		{"since", audit.Filter{Since: time.Now().Add(time.Hour)}, nil},
		{"until", audit.Filter{Until: time.Now().Add(time.Hour)}, []string{"user.delete", "device.create", "point.create"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs, err := audit.List(ctx, pool, c.f)
			require.NoError(t, err)
			var got []string
			for _, e := range evs {
				got = append(got, e.Action)
			}
			require.Equal(t, c.want, got)
		})
	}
}

func TestRecordRollsBackWithTheChangeIntegration(t *testing.T) {
	t.Parallel()
	ctx, pool := newPool(t)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		require.NoError(t, audit.Record(ctx, tx, audit.Entry{Actor: "cli:root", Action: "point.create", EntityType: "point", EntityID: "P"}))
		return context.Canceled // the change failed
	})
	require.ErrorIs(t, err, context.Canceled)
	evs, err := audit.List(ctx, pool, audit.Filter{})
	require.NoError(t, err)
	require.Empty(t, evs)
}

func TestRecordRefusesIncompleteEntriesIntegration(t *testing.T) {
	t.Parallel()
	ctx, pool := newPool(t)
	for _, e := range []audit.Entry{
		{Action: "point.create", EntityType: "point"},
		{Actor: "cli:root", Action: "create", EntityType: "point"},
		{Actor: "cli:root", Action: "point.create"},
		{Actor: "cli:root", Action: "point.create", EntityType: "point", After: func() {}},
	} {
		err := record(ctx, t, pool, e)
		require.Error(t, err, "%+v", e)
	}
	err := record(ctx, t, pool, audit.Entry{Action: "point.create", EntityType: "point"})
	require.ErrorIs(t, err, audit.ErrInvalid)
}
