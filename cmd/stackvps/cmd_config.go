package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"

	"go.yaml.in/yaml/v3"

	"github.com/stackvps/stackvps/config"
)

func configCommand() *command {
	return &command{
		name:    "config",
		summary: "validate, show or list the configuration (validate | show | keys)",
		usage:   "validate|show|keys",
		args: func(args []string) error {
			if len(args) != 1 {
				return errors.New("want exactly one of validate, show, keys")
			}
			switch args[0] {
			case "validate", "show", "keys":
				return nil
			}
			return fmt.Errorf("unknown subcommand %q; want validate, show or keys", args[0])
		},
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			return func(_ context.Context, e *env, args []string) error {
				switch args[0] {
				case "keys":
					return printKeys(e)
				case "show":
					cfg, err := loadConfig(e)
					if err != nil {
						return err
					}
					out, err := yaml.Marshal(cfg)
					if err != nil {
						return fmt.Errorf("encoding configuration: %w", err)
					}
					_, err = e.stdout.Write(out)
					return err
				}
				cfg, err := config.Load(e.configPath, e.environ)
				if err != nil {
					probs := config.Problems(err)
					for _, p := range probs {
						fmt.Fprintln(e.stdout, p)
					}
					return &silentError{fmt.Errorf("%d configuration problem(s)", len(probs))}
				}
				src := e.configPath
				if src == "" {
					src = "defaults and environment"
				}
				fmt.Fprintf(e.stdout, "configuration OK (%s); database %s, kafka %v, mqtt %s\n",
					src, config.RedactURL(cfg.Database.URL.Reveal()), cfg.Kafka.Brokers, mqttAddr(cfg))
				return nil
			}
		},
	}
}

func mqttAddr(cfg *config.Config) string {
	u, err := cfg.MQTT.URL()
	if err != nil {
		return cfg.MQTT.Broker
	}
	return u.String()
}

func printKeys(e *env) error {
	keys := config.Keys()
	paths := make([]string, 0, len(keys))
	for p := range keys {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	aliases := map[string]string{}
	for a, p := range config.Aliases {
		aliases[p] = a
	}
	fmt.Fprintf(e.stdout, "%-34s %-40s %s\n", "KEY", "ENVIRONMENT", "ALIAS")
	for _, p := range paths {
		fmt.Fprintf(e.stdout, "%-34s %-40s %s\n", p, keys[p], aliases[p])
	}
	return nil
}

// loadConfig loads the configuration; its error lists every problem, one per
// line, each naming its key.
func loadConfig(e *env) (*config.Config, error) {
	cfg, err := config.Load(e.configPath, e.environ)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}
