package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/internal/mqttclient"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/points"
	"github.com/stackvps/stackvps/simulate"
	"github.com/stackvps/stackvps/sinks/timescale"
)

func simulateCommand() *command {
	return &command{
		name:    "simulate",
		summary: "publish a simulated fleet of sensors over MQTT in several vendor formats, with optional faults",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var sc simulate.Config
			fs.IntVar(&sc.Devices, "devices", 50, "number of devices")
			fs.Float64Var(&sc.Rate, "rate", 1, "readings per device per second (0: as fast as possible, needs --count)")
			fs.DurationVar(&sc.Step, "step", 0, "event-time spacing of a device's readings (default 1/rate; with --rate 0 and --start in the past, publishes history fast)")
			fs.IntVar(&sc.Count, "count", 0, "readings per device, then stop (0: no limit)")
			fs.DurationVar(&sc.Duration, "duration", 0, "stop after this long (0: no limit)")
			formats := fs.String("formats", "", "comma-separated provider formats (default all): acme-registers, generic-json, lorawan-ttn")
			fs.StringVar(&sc.TopicPrefix, "topic-prefix", "telemetry", "topics are <prefix>/<provider>/<device>")
			qos := fs.Int("qos", 1, "MQTT QoS, 0 or 1")
			start := fs.String("start", "", "event time of the first reading, RFC 3339 (default: now)")
			fs.IntVar(&sc.Concurrency, "concurrency", 64, "publishes in flight")
			fs.Float64Var(&sc.Faults.BadRatio, "bad-ratio", 0, "fraction of messages replaced by malformed payloads")
			fs.Float64Var(&sc.Faults.DuplicateRatio, "duplicate-ratio", 0, "fraction of messages published twice")
			fs.Float64Var(&sc.Faults.SkewedDevices, "skewed-devices", 0, "fraction of devices whose clock is off by --skew")
			fs.DurationVar(&sc.Faults.Skew, "skew", 0, "clock error of the skewed devices (e.g. 2h, -30m)")
			fs.DurationVar(&sc.Faults.BurstEvery, "burst-every", 0, "devices hold readings and publish them together at this interval")
			seed := fs.Uint64("seed", 1, "seed for fault choices")
			register := fs.Bool("register", false, "first register the fleet's devices, each on its own point P-<device>, in the database")
			return func(ctx context.Context, e *env, _ []string) error {
				cfg, err := loadConfig(e)
				if err != nil {
					return err
				}
				if *formats != "" {
					sc.Formats = strings.Split(*formats, ",")
				}
				if *qos < 0 || *qos > 1 {
					return &usageError{"simulate: --qos must be 0 or 1"}
				}
				sc.QoS = byte(*qos)
				sc.Seed = *seed
				if *start != "" {
					if sc.Start, err = time.Parse(time.RFC3339, *start); err != nil {
						return &usageError{fmt.Sprintf("simulate: --start: %v", err)}
					}
				}
				fleet, err := simulate.New(sc)
				if err != nil {
					return &usageError{"simulate: " + err.Error()}
				}
				log := pipeline.NewLogger(cfg.Log, e.stderr)
				if *register {
					if err := registerFleet(ctx, cfg, fleet); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "registered %d devices and their points\n", len(fleet.Devices()))
				}
				cc, err := mqttclient.ClientConfig(cfg.MQTT, mqttclient.Options{
					ClientID:      fmt.Sprintf("stackvps-simulate-%d", os.Getpid()),
					CleanStart:    true,
					SessionExpiry: -1,
					Log:           log,
				})
				if err != nil {
					return err
				}
				cm, err := autopaho.NewConnection(ctx, cc)
				if err != nil {
					return fmt.Errorf("connecting to mqtt: %w", err)
				}
				actx, cancel := context.WithTimeout(ctx, cfg.MQTT.ConnectTimeout.Std()+5*time.Second)
				defer cancel()
				if err := cm.AwaitConnection(actx); err != nil {
					return fmt.Errorf("connecting to mqtt at %s: %w", mqttAddr(cfg), err)
				}
				log.Info("simulating", "devices", len(fleet.Devices()), "rate", sc.Rate, "formats", fleet.Config().Formats, "broker", mqttAddr(cfg))
				stats, runErr := fleet.Run(ctx, publisher{cm})
				dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer dcancel()
				_ = cm.Disconnect(dctx)
				fmt.Fprintf(e.stdout, "published %d messages (%d failed, %d malformed on purpose, %d duplicated) in %s; by provider: %v\n",
					stats.Published, stats.Failed, stats.Bad, stats.Duplicates, stats.Elapsed.Round(time.Millisecond), stats.ByProvider)
				if runErr != nil {
					return fmt.Errorf("publishing: %w", runErr)
				}
				return nil
			}
		},
	}
}

// publisher publishes through an autopaho connection; QoS 1 waits for PUBACK.
type publisher struct{ cm *autopaho.ConnectionManager }

func (p publisher) Publish(ctx context.Context, topic string, payload []byte, qos byte) error {
	_, err := p.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	return err
}

// registerFleet upserts a point and a device for every simulated device.
func registerFleet(ctx context.Context, cfg *config.Config, fleet *simulate.Fleet) error {
	pool, err := timescale.Connect(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := points.NewStore(pool)
	var devs []points.Device
	for i, id := range fleet.Devices() {
		p := points.Point{Code: simulate.PointOf(id), Name: "Simulated well " + id, Kind: "well", Active: true}
		if err := store.UpsertPoint(ctx, p); err != nil {
			return err
		}
		devs = append(devs, points.Device{ID: id, Point: p.Code, Provider: fleet.Provider(i), Active: true})
	}
	return store.UpsertDevices(ctx, devs...)
}
