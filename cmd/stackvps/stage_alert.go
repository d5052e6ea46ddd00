package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/alerts"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/query"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/alert"
)

// buildAlert builds the alert stage: the rules of alert_rules judged
// against telemetry.readings and the clock, alerts kept in the database,
// their notifications produced to the notifications topic (through the
// alert_events outbox); undecodable readings go to telemetry.readings.dlq.
func buildAlert(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	readings, err := schemas.NewReadingCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Readings)
	if err != nil {
		return nil, err
	}
	notes, err := schemas.NewNotificationCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Notifications)
	if err != nil {
		return nil, err
	}
	prod, err := pipeline.NewProducer("alert-notifications", a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	proc, err := alert.New(a.cfg.Alert, alert.Deps{
		Store: alerts.NewStore(pool, nil), Decoder: readings, Encoder: notes, Producer: prod,
		Topic: a.cfg.Kafka.Topics.Notifications, Registerer: a.reg, Log: a.log.With("stage", "alert"),
		MissingAfter: a.cfg.Submit.MissingAfter.Std(),
	})
	if err != nil {
		prod.Close()
		return nil, err
	}
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "alert", Inputs: []string{a.cfg.Kafka.Topics.Readings}, DLQ: a.cfg.Kafka.Topics.ReadingsDLQ, Processor: proc,
	}, a.pipelineDeps())
	if err != nil {
		prod.Close()
		return nil, err
	}
	return closingRunner{st, func() {
		// Whatever is not acknowledged stays in the outbox for the next start.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Pipeline.ShutdownTimeout.Std())
		defer cancel()
		_ = prod.Flush(fctx)
		prod.Close()
	}}, nil
}

// alertAPIStore is the store behind the API's /api/alerts/ routes:
// authorized by the accounts on pool and audited.
func alertAPIStore(pool *pgxpool.Pool) query.AlertStore {
	return alerts.NewStore(pool, accounts.New(pool))
}
