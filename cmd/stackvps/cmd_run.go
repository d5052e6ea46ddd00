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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/stages/bridge"
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
