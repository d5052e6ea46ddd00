package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/sinks/timescale"
)

func migrateCommand() *command {
	return &command{
		name:    "migrate",
		summary: "apply database migrations and create the Kafka topics (safe to run concurrently and repeatedly)",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			skipDB := fs.Bool("skip-db", false, "do not touch the database")
			skipTopics := fs.Bool("skip-topics", false, "do not create Kafka topics")
			timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
			return func(ctx context.Context, e *env, _ []string) error {
				if *skipDB && *skipTopics {
					return &usageError{"migrate: --skip-db and --skip-topics leave nothing to do"}
				}
				cfg, err := loadConfig(e)
				if err != nil {
					return err
				}
				log := pipeline.NewLogger(cfg.Log, e.stderr)
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				if !*skipDB {
					pool, err := timescale.Connect(ctx, cfg.Database)
					if err != nil {
						return err
					}
					res, err := timescale.Migrate(ctx, pool, log)
					if err == nil {
						// The rollups follow the configuration: day zone,
						// compression, retention (the sink applies it too).
						err = timescale.ApplyPolicies(ctx, pool, cfg.Rollups, log)
					}
					if err == nil {
						err = syncComplianceSources(ctx, pool, cfg.Compliance)
					}
					pool.Close()
					if err != nil {
						return fmt.Errorf("migrating database: %w", err)
					}
					fmt.Fprintf(e.stdout, "database: mode %s, %d migration(s) applied now, %d already applied\n",
						res.Mode, len(res.Applied), res.Already)
					for _, m := range res.Applied {
						fmt.Fprintf(e.stdout, "  applied %04d_%s\n", m.Version, m.Name)
					}
				}
				if !*skipTopics {
					states, err := pipeline.EnsureTopics(ctx, cfg.Kafka, pipeline.ContractTopics(cfg.Kafka))
					if err != nil {
						return fmt.Errorf("creating topics on %v: %w", cfg.Kafka.Brokers, err)
					}
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tREPLICAS\tSTATE")
					var problems []error
					for _, s := range states {
						state := "exists"
						if s.Created {
							state = "created"
						}
						if s.Note != "" {
							state += ": " + s.Note
						}
						if s.Missing {
							problems = append(problems, fmt.Errorf("topic %s is still missing", s.Name))
						}
						fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", s.Name, s.Partitions, s.ReplicationFactor, state)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					if err := errors.Join(problems...); err != nil {
						return err
					}
				}
				return nil
			}
		},
	}
}
