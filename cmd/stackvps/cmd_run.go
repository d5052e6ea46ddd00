package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/providers"
	"github.com/stackvps/stackvps/query"
	"github.com/stackvps/stackvps/schemas"
	"github.com/stackvps/stackvps/sinks/timescale"
	"github.com/stackvps/stackvps/stages/aggregate"
	"github.com/stackvps/stackvps/stages/bridge"
	"github.com/stackvps/stackvps/stages/normalize"
)

// runner is a running stage.
type runner interface {
	Run(ctx context.Context) error
}

// stageDef is one stage `run --stages` can start.
type stageDef struct {
	name    string
	summary string
	build   func(ctx context.Context, a *app) (runner, error)
}

// stageDefs lists the stages in data-flow order, which is also start order.
func stageDefs() []stageDef {
	return []stageDef{
		{name: "bridge", summary: "MQTT -> telemetry.raw (acks MQTT only after Kafka)", build: buildBridge},
		{name: "normalize", summary: "telemetry.raw -> telemetry.readings (providers, units, quality)", build: buildNormalize},
		{name: "sink", summary: "telemetry.readings -> readings table (exactly once)", build: buildSink},
		{name: "aggregate", summary: "telemetry.readings -> compliance.records (hourly windows, per-device watermarks)", build: buildAggregate},
		{name: "alert", summary: "telemetry.readings -> notifications (alert rules, lifecycle, outbox)", build: buildAlert},
		{name: "submit", summary: "compliance.records -> regulators (slots, exactly-once submitter, one leader per source)", build: buildSubmit},
		{name: "notify", summary: "notifications -> people (email, SMS, signed webhooks, in-app inbox)", build: buildNotify},
		{name: "scheduler", summary: "daily compliance report, hourly health check, source sync (one leader by advisory lock)", build: buildScheduler},
		{name: "api", summary: "query API under /api on http.listen (data, latest, points, owners, ingest)", build: buildAPI},
	}
}

func stageNames() []string {
	var out []string
	for _, d := range stageDefs() {
		out = append(out, d.name)
	}
	return out
}

// parseStages turns "a,b" into stage definitions; empty means all.
func parseStages(list string) ([]stageDef, error) {
	defs := stageDefs()
	if strings.TrimSpace(list) == "" || list == "all" {
		return defs, nil
	}
	var out []stageDef
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(defs, func(d stageDef) bool { return d.name == name })
		if i < 0 {
			return nil, fmt.Errorf("--stages: unknown stage %q (known: %s)", name, strings.Join(stageNames(), ", "))
		}
		if slices.ContainsFunc(out, func(d stageDef) bool { return d.name == name }) {
			return nil, fmt.Errorf("--stages: stage %q given twice", name)
		}
		out = append(out, defs[i])
	}
	return out, nil
}

// app is what stages share in one process.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *pipeline.Metrics
	health  *pipeline.Health
	server  *pipeline.Server

	poolOnce sync.Once
	pool     *pgxpool.Pool
	poolErr  error
}

// db returns the process's database pool, connecting on first use, with a
// readiness check.
func (a *app) db(ctx context.Context) (*pgxpool.Pool, error) {
	a.poolOnce.Do(func() {
		a.pool, a.poolErr = timescale.Connect(ctx, a.cfg.Database)
		if a.poolErr == nil {
			a.health.Add("postgres", func(ctx context.Context) error { return a.pool.Ping(ctx) })
		}
	})
	return a.pool, a.poolErr
}

// providers returns the built-in providers plus the specs in
// normalize.providers_dir.
func (a *app) providers() (*providers.Registry, error) {
	reg := providers.NewRegistry()
	if err := providers.RegisterBuiltin(reg); err != nil {
		return nil, err
	}
	if dir := a.cfg.Normalize.ProvidersDir; dir != "" {
		specs, err := providers.LoadSpecDir(dir)
		if err != nil {
			return nil, fmt.Errorf("normalize.providers_dir: %w", err)
		}
		for _, sp := range specs {
			if err := reg.Register(sp.Name(), sp); err != nil {
				return nil, fmt.Errorf("normalize.providers_dir: %w", err)
			}
		}
	}
	return reg, nil
}

func (a *app) close() {
	if a.pool != nil {
		a.pool.Close()
	}
}

func runCommand() *command {
	var stages string
	return &command{
		name:    "run",
		summary: "run pipeline stages (all by default) with /metrics, /healthz and /readyz on http.listen",
		args: func(args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			_, err := parseStages(stages)
			return err
		},
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			fs.StringVar(&stages, "stages", "", "comma-separated stages to run (default all): "+strings.Join(stageNames(), ", "))
			return func(ctx context.Context, e *env, _ []string) error {
				defs, err := parseStages(stages)
				if err != nil {
					return &usageError{err.Error()}
				}
				cfg, err := loadConfig(e)
				if err != nil {
					return err
				}
				return runStages(ctx, e, cfg, defs)
			}
		},
	}
}

func runStages(ctx context.Context, e *env, cfg *config.Config, defs []stageDef) error {
	log := pipeline.NewLogger(cfg.Log, e.stderr)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	met, err := pipeline.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	a := &app{cfg: cfg, log: log, reg: reg, metrics: met, health: pipeline.NewHealth(3 * time.Second)}
	a.server = pipeline.NewServer(cfg.HTTP, reg, a.health, log.With("component", "http"))
	defer a.close()
	if err := a.server.Listen(); err != nil {
		return err
	}
	runners := make([]runner, 0, len(defs))
	names := make([]string, 0, len(defs))
	for _, d := range defs {
		r, err := d.build(ctx, a)
		if err != nil {
			return fmt.Errorf("starting stage %s: %w", d.name, err)
		}
		runners = append(runners, r)
		names = append(names, d.name)
	}
	log.Info("stackvps running", "stages", names, "http", a.server.Addr().String())
	// Stages stop together: one failing stops the others, which drain. The
	// HTTP server outlives them so /metrics and /readyz answer during the
	// drain; the server failing stops everything.
	g, gctx := errgroup.WithContext(ctx)
	var stagesWG sync.WaitGroup
	for i, r := range runners {
		stagesWG.Add(1)
		g.Go(func() error {
			defer stagesWG.Done()
			if err := r.Run(gctx); err != nil {
				return fmt.Errorf("stage %s: %w", names[i], err)
			}
			if ctx.Err() == nil && gctx.Err() == nil {
				return fmt.Errorf("stage %s stopped unexpectedly", names[i])
			}
			return nil
		})
	}
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	go func() { stagesWG.Wait(); stopSrv() }()
	g.Go(func() error { return a.server.Run(srvCtx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stackvps stopped", "err", err)
	return err
}

func buildBridge(_ context.Context, a *app) (runner, error) {
	prod, err := pipeline.NewProducer("bridge", a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	b, err := bridge.New(bridge.Config{
		MQTT: a.cfg.MQTT, Bridge: a.cfg.Bridge,
		Topic: a.cfg.Kafka.Topics.Raw, DLQ: a.cfg.Kafka.Topics.RawDLQ,
		DrainTimeout: a.cfg.Pipeline.ShutdownTimeout.Std(),
	}, bridge.Deps{Producer: prod, Registerer: a.reg, Health: a.health, Log: a.log})
	if err != nil {
		prod.Close()
		return nil, err
	}
	return closingRunner{b, prod.Close}, nil
}

func (a *app) pipelineDeps() pipeline.Deps {
	return pipeline.Deps{Kafka: a.cfg.Kafka, Pipeline: a.cfg.Pipeline, Metrics: a.metrics, Health: a.health, Log: a.log}
}

// closingRunner closes resources after its runner returns.
type closingRunner struct {
	runner
	close func()
}

func (c closingRunner) Run(ctx context.Context) error {
	defer c.close()
	return c.runner.Run(ctx)
}

func buildNormalize(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	reg, err := a.providers()
	if err != nil {
		return nil, err
	}
	codec, err := schemas.NewReadingCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Readings)
	if err != nil {
		return nil, err
	}
	log := a.log.With("stage", "normalize")
	dir := normalize.NewDirectory(points.NewStore(pool), a.cfg.Normalize.DeviceRefresh.Std(), log)
	a.health.Add("devices", dir.Ready)
	proc, err := normalize.New(a.cfg.Normalize, normalize.Deps{
		Decoders: reg, Devices: dir, Encoder: codec, Registerer: a.reg, Log: log,
	})
	if err != nil {
		return nil, err
	}
	st, err := pipeline.NewStage(pipeline.StageConfig{
		Name: "normalize", Inputs: []string{a.cfg.Kafka.Topics.Raw}, Output: a.cfg.Kafka.Topics.Readings,
		DLQ: a.cfg.Kafka.Topics.RawDLQ, Processor: proc,
	}, a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	return together{dir, st}, nil
}

func buildSink(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	codec, err := schemas.NewReadingCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Readings)
	if err != nil {
		return nil, err
	}
	decode := func(b []byte) (timescale.Row, error) {
		var r schemas.Reading
		if err := codec.Decode(b, &r); err != nil {
			if !errors.Is(err, schemas.ErrBadRecord) {
				// The registry could not be asked for the writer's schema.
				return timescale.Row{}, pipeline.Transient(err)
			}
			return timescale.Row{}, err
		}
		return timescale.Row{Time: r.Time, Point: r.Point, Variable: r.Variable, Value: r.Value, Quality: r.Quality,
			Device: r.Device, RawValue: r.RawValue, RawUnit: r.RawUnit}, nil
	}
	w, err := timescale.NewWriter(ctx, pool, decode, a.reg, a.log.With("stage", "sink"))
	if err != nil {
		return nil, err
	}
	// The rollups follow the configuration (day zone, compression,
	// retention), then the refresher folds every committed batch into
	// readings_1m/_1h/_1d beside the batch stage.
	rlog := a.log.With("stage", "sink", "component", "rollups")
	if err := timescale.ApplyPolicies(ctx, pool, a.cfg.Rollups, rlog); err != nil {
		return nil, err
	}
	ref, err := timescale.NewRefresher(ctx, pool, timescale.RefresherConfig{Rollups: a.cfg.Rollups, Registerer: a.reg, Log: rlog})
	if err != nil {
		return nil, err
	}
	w.OnStored(ref.Touch)
	st, err := pipeline.NewBatchStage(pipeline.BatchStageConfig{
		Name: "sink", Inputs: []string{a.cfg.Kafka.Topics.Readings}, DLQ: a.cfg.Kafka.Topics.ReadingsDLQ,
		Writer: w, MaxBatch: a.cfg.Sink.BatchSize, Linger: a.cfg.Sink.Linger.Std(),
	}, a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	return together{st, ref}, nil
}

// together runs several runners until all return; the first error cancels
// the others.
type together []runner

func (t together) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range t {
		g.Go(func() error { return r.Run(gctx) })
	}
	return g.Wait()
}

// buildAPI mounts the query API at /api on the process's HTTP server; its
// runner blocks until the process stops, then drains the ingests in flight.
func buildAPI(ctx context.Context, a *app) (runner, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, err
	}
	if err := timescale.CheckMigrated(ctx, pool); err != nil {
		return nil, err
	}
	reg, err := a.providers()
	if err != nil {
		return nil, err
	}
	compStore, err := a.complianceStore(ctx)
	if err != nil {
		return nil, err
	}
	prod, err := pipeline.NewProducer("api", a.pipelineDeps())
	if err != nil {
		return nil, err
	}
	api, err := query.New(query.Config{
		API: a.cfg.API, RawTopic: a.cfg.Kafka.Topics.Raw, DefaultProvider: a.cfg.Normalize.DefaultProvider,
		DrainTimeout: a.cfg.Pipeline.ShutdownTimeout.Std(),
	}, query.Deps{
		Pool: pool, Accounts: accounts.New(pool), Producer: prod, Providers: reg,
		Registerer: a.reg, Log: a.log.With("stage", "api"), Inbox: query.NewInboxStore(pool),
		Alerts: alertAPIStore(pool), Compliance: compStore,
	})
	if err != nil {
		prod.Close()
		return nil, err
	}
	a.server.Router().Mount("/api", api.Handler())
	return closingRunner{api, prod.Close}, nil
}

// buildAggregate builds the aggregate stage: hourly windows per point over
// telemetry.readings, one compliance record per point and hour to
// compliance.records; refused readings go to telemetry.readings.dlq.
func buildAggregate(ctx context.Context, a *app) (runner, error) {
	readings, err := schemas.NewReadingCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.Readings)
	if err != nil {
		return nil, err
	}
	records, err := schemas.NewComplianceRecordCodec(ctx, a.cfg.SchemaRegistry, a.cfg.Kafka.Topics.ComplianceRecords)
	if err != nil {
		return nil, err
	}
	proc, err := aggregate.New(a.cfg.Aggregate, aggregate.Deps{
		Decoder: readings, Encoder: records, Registerer: a.reg, Log: a.log.With("stage", "aggregate"),
		TotalizerRollover: a.cfg.Normalize.TotalizerRollover,
	})
	if err != nil {
		return nil, err
	}
	return pipeline.NewStage(pipeline.StageConfig{
		Name: "aggregate", Inputs: []string{a.cfg.Kafka.Topics.Readings}, Output: a.cfg.Kafka.Topics.ComplianceRecords,
		DLQ: a.cfg.Kafka.Topics.ReadingsDLQ, Processor: proc,
	}, a.pipelineDeps())
}
