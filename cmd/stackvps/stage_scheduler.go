package main

import (
	"context"
	"fmt"
	"time"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/internal/doctor"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/scheduler"
)

// buildScheduler builds the scheduler stage: the jobs of scheduler.jobs run
// by the replica holding the leader lock, each period once.
func buildScheduler(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	sc := a.cfg.Scheduler
	loc, err := time.LoadLocation(sc.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("scheduler.time_zone: %w", err)
	}
	codec, err := schemas.NewNotificationCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Notifications)
	if err != nil {
		return nil, err
	}
	prod, err := pipeline.NewProducer("scheduler", a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	log := a.log.With("stage", "scheduler")
	notifier := &scheduler.Notifier{Producer: prod, Encoder: codec, Topic: a.cfg.Kafka.Topics.Notifications}
	report := &scheduler.DailyReport{Pool: pool, Notifier: notifier, Location: loc,
		MissingAfter: a.cfg.Submit.MissingAfter.Std(), Log: log.With("job", "daily_report")}
	health := &scheduler.HealthCheck{
		Pool: pool, Notifier: notifier, StaleAfter: sc.StaleAfter.Std(), MaxLag: sc.MaxLag,
		Dependencies: func(ctx context.Context) []scheduler.Finding {
			return dependencyFindings(ctx, a, sc.CheckTimeout.Std())
		},
		Lags: func(ctx context.Context) (map[string]int64, error) {
			ctx, cancel := context.WithTimeout(ctx, sc.CheckTimeout.Std())
			defer cancel()
			return pipeline.GroupLags(ctx, a.cfg.Kafka, a.cfg.Pipeline.GroupPrefix+"-")
		},
		DLQEndOffsets: func(ctx context.Context) (map[string]int64, error) {
			ctx, cancel := context.WithTimeout(ctx, sc.CheckTimeout.Std())
			defer cancel()
			return pipeline.EndOffsets(ctx, a.cfg.Kafka, a.cfg.Kafka.Topics.DLQs())
		},
		Log: log.With("job", "health_check"),
	}
	sources := store.New(pool, nil)
	jobs := scheduler.NewRegistry()
	for name, job := range map[string]scheduler.Job{
		"daily_report": report.Run,
		"health_check": health.Run,
		"source_sync": func(ctx context.Context, _ time.Time) error {
			srcs, err := compliance.Sources(a.cfg.Compliance)
			if err != nil {
				return err
			}
			return sources.SyncSources(ctx, srcs)
		},
	} {
		if err := jobs.Register(name, job); err != nil {
			prod.Close()
			return nil, err
		}
	}
	s, err := scheduler.New(scheduler.Config{Scheduler: sc, DrainTimeout: a.cfg.Pipeline.ShutdownTimeout.Std()},
		scheduler.Deps{Pool: pool, Jobs: jobs, Registerer: a.reg, Log: log})
	if err != nil {
		prod.Close()
		return nil, err
	}
	return closingRunner{s, prod.Close}, nil
}

// dependencyFindings runs the doctor's checks; each failed one is a
// finding (warnings are configuration advice, not incidents).
func dependencyFindings(ctx context.Context, a *app, timeout time.Duration) []scheduler.Finding {
	var out []scheduler.Finding
	for _, r := range doctor.Run(ctx, a.cfg, timeout) {
		if r.Status != doctor.Fail {
			continue
		}
		msg := r.Name + ": " + r.Detail
		if r.Fix != "" {
			msg += " (fix: " + r.Fix + ")"
		}
		out = append(out, scheduler.Finding{Kind: scheduler.KindDependency, Severity: "critical", Subject: r.Name, Message: msg})
	}
	return out
}
