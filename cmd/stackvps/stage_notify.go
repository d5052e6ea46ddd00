package main

import (
	"context"

	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/notify"
)

// buildNotify builds the notify stage: it consumes notifications, queues
// one delivery per channel in notification_deliveries before committing
// the offsets, and delivers them by email, SMS, webhook and in-app with
// per-channel workers. Undecodable records go to kafka.topics.notifications_dlq.
func buildNotify(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	codec, err := schemas.NewNotificationCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Notifications)
	if err != nil {
		return nil, err
	}
	n, err := notify.New(a.cfg.Notify, notify.Deps{
		Pool: pool, Decoder: codec, Registerer: a.reg, Log: a.log.With("stage", "notify"),
	})
	if err != nil {
		return nil, err
	}
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "notify", Inputs: []string{a.cfg.Kafka.Topics.Notifications}, DLQ: a.cfg.Kafka.Topics.NotificationsDLQ, Processor: n,
	}, a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	return together{st, n}, nil
}
