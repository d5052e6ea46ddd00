package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/compliance/store"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/submit"
)

// complianceStore returns the compliance store on the process's pool, with
// the credentials sealer when compliance.credentials_key is set (without
// it, configs with credentials can be neither created nor submitted).
func (a *app) complianceStore(ctx context.Context) (*store.Store, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	var sealer *compliance.Sealer
	if a.cfg.Compliance.CredentialsKey != "" {
		if sealer, err = compliance.NewSealer(a.cfg.Compliance.CredentialsKey); err != nil {
			return nil, err
		}
	} else {
		a.log.Warn("compliance.credentials_key is not set: compliance credentials can be neither stored nor opened")
	}
	return store.New(pool, sealer), nil
}

// buildSubmit builds the submit stage: compliance.records fill the slots of
// the points' compliance configs, and one leader-elected submitter per
// source sends due slots to the regulators exactly once. Undecodable
// records go to kafka.topics.compliance_records_dlq.
func buildSubmit(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	st, err := a.complianceStore(ctx)
	if err != nil {
		return nil, err
	}
	// The sources follow the configuration (endpoints, limits), as
	// `stackvps migrate` leaves them.
	if err := syncComplianceSources(ctx, pool, a.cfg.Compliance); err != nil {
		return nil, err
	}
	codec, err := schemas.NewComplianceRecordCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.ComplianceRecords)
	if err != nil {
		return nil, err
	}
	sub, err := submit.New(a.cfg.Submit, submit.Deps{
		Store: st, Protocols: compliance.NewProtocols(&http.Client{}), Decoder: codec,
		Registerer: a.reg, Log: a.log.With("stage", "submit"),
	})
	if err != nil {
		return nil, err
	}
	proc, err := sub.Processor()
	if err != nil {
		return nil, err
	}
	stage, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "submit", Inputs: []string{a.cfg.Kafka.Topics.ComplianceRecords},
		DLQ: a.cfg.Kafka.Topics.ComplianceRecordsDLQ, Processor: proc,
	}, a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	return together{stage, sub}, nil
}

// syncComplianceSources writes the configured compliance sources (the
// built-ins merged with compliance.sources) to compliance_sources; `migrate`
// runs it after the migrations, the submit stage at start.
func syncComplianceSources(ctx context.Context, pool *pgxpool.Pool, cfg config.Compliance) error {
	srcs, err := compliance.Sources(cfg)
	if err != nil {
		return err
	}
	if err := store.New(pool, nil).SyncSources(ctx, srcs); err != nil {
		return fmt.Errorf("syncing compliance sources: %w", err)
	}
	return nil
}
