package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/doctor"
)

func doctorCommand() *command {
	return &command{
		name:    "doctor",
		summary: "check the configuration and every dependency, with a fix for each failure",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			timeout := fs.Duration("timeout", 10*time.Second, "time allowed to each check")
			return func(ctx context.Context, e *env, _ []string) error {
				cfg, err := config.Load(e.configPath, e.environ)
				if err != nil {
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
					for _, p := range config.Problems(err) {
						fmt.Fprintf(tw, "config\tFAIL\t%v\n", p)
					}
					_ = tw.Flush()
					fmt.Fprintln(e.stdout, "\nfix: correct the keys above (stackvps config validate lists them; stackvps config keys lists every key)")
					return &silentError{errors.New("configuration is invalid")}
				}
				results := doctor.Run(ctx, cfg, *timeout)
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
				for _, r := range results {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Status, r.Detail)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				var fixes int
				for _, r := range results {
					if r.Fix != "" && (r.Status == doctor.Fail || r.Status == doctor.Warn) {
						if fixes == 0 {
							fmt.Fprintln(e.stdout)
						}
						fixes++
						fmt.Fprintf(e.stdout, "fix %s: %s\n", r.Name, r.Fix)
					}
				}
				if doctor.Failed(results) {
					return &silentError{errors.New("some checks failed")}
				}
				return nil
			}
		},
	}
}
