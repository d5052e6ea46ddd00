// Package config is Stack VPS's configuration: one YAML file decoded strictly
// into one typed tree, with every default in [Default], every key overridable
// from the environment, and validation messages that start with the key.
//
// Precedence, lowest first: [Default], the YAML file, the old system's
// variables (DATABASE_URL, MQTT_BROKER, ...; see [Aliases]), and STACKVPS_
// variables named after the key path (kafka.brokers is
// STACKVPS_KAFKA_BROKERS). An unknown key in the file and an unknown STACKVPS_
// variable are errors, never ignored.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config is the whole configuration tree. The zero value is not useful: start
// from [Default] or [Load].
type Config struct {
	Log            Log            `yaml:"log"`
	HTTP           HTTP           `yaml:"http"`
	Database       Database       `yaml:"database"`
	Kafka          Kafka          `yaml:"kafka"`
	SchemaRegistry SchemaRegistry `yaml:"schema_registry"`
	MQTT           MQTT           `yaml:"mqtt"`
	Pipeline       Pipeline       `yaml:"pipeline"`
	Bridge         Bridge         `yaml:"bridge"`
	Normalize      Normalize      `yaml:"normalize"`
	Sink           Sink           `yaml:"sink"`
	Aggregate      Aggregate      `yaml:"aggregate"`
	Rollups        Rollups        `yaml:"rollups"`
	API            API            `yaml:"api"`
	Compliance     Compliance     `yaml:"compliance"`
	Submit         Submit         `yaml:"submit"`
	Alert          Alert          `yaml:"alert"`
	Notify         Notify         `yaml:"notify"`
	Scheduler      Scheduler      `yaml:"scheduler"`
}

// Log configures the structured logger.
type Log struct {
	// Level is one of debug, info, warn, error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// HTTP configures the process's HTTP server: /metrics, /healthz, /readyz and,
// when the api stage runs, the query API.
type HTTP struct {
	// Listen is the address to listen on. Default ":8000", as the old system's.
	Listen string `yaml:"listen"`
	// ReadTimeout bounds reading one request. Default 30s.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one response. Default 5m (large exports).
	WriteTimeout Duration `yaml:"write_timeout"`
}

// Database configures PostgreSQL / TimescaleDB.
type Database struct {
	// URL is a libpq connection string or URL. Default
	// "postgres://stackvps@localhost:5432/stackvps?sslmode=disable".
	// Environment: DATABASE_URL or STACKVPS_DATABASE_URL.
	URL SecretURL `yaml:"url"`
	// MaxConns is the pool size of each process. Default 10.
	MaxConns int `yaml:"max_conns"`
	// ConnectTimeout bounds establishing one connection. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
}

// Kafka configures the brokers and the contract topics.
type Kafka struct {
	// Brokers are the seed brokers, host:port. Default ["localhost:9092"].
	// Environment: KAFKA_BROKERS (comma-separated).
	Brokers []string `yaml:"brokers"`
	// ClientID prefixes every client's id. Default "stackvps".
	ClientID string `yaml:"client_id"`
	// Topics names the contract topics.
	Topics Topics `yaml:"topics"`
	// Partitions is the partition count `migrate` creates topics with.
	// Default 12: enough to scale a stage to 12 consumers.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor is the replication `migrate` creates topics with;
	// -1 takes the broker's default. Default -1.
	ReplicationFactor int `yaml:"replication_factor"`
	// Retention is how long topics keep records; telemetry.raw is the replay
	// source, so keep it long. Default 720h (30 days).
	Retention Duration `yaml:"retention"`
	// DialTimeout bounds connecting to one broker. Default 10s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// Compression of produced batches: none, gzip, snappy, lz4 or zstd.
	// Default lz4: zstd compresses better but cost normalize 14% of its CPU
	// in the benchmarks (benchmarks/results/ANALYSIS.md).
	Compression string `yaml:"compression"`
}

// Topics names the contract topics. Renaming one breaks users' tooling: do it
// only on purpose.
type Topics struct {
	Raw                  string `yaml:"raw"`                    // Default telemetry.raw.
	RawDLQ               string `yaml:"raw_dlq"`                // Default telemetry.raw.dlq.
	Readings             string `yaml:"readings"`               // Default telemetry.readings.
	ReadingsDLQ          string `yaml:"readings_dlq"`           // Default telemetry.readings.dlq.
	ComplianceRecords    string `yaml:"compliance_records"`     // Default compliance.records.
	ComplianceRecordsDLQ string `yaml:"compliance_records_dlq"` // Default compliance.records.dlq.
	Notifications        string `yaml:"notifications"`          // Default notifications.
	NotificationsDLQ     string `yaml:"notifications_dlq"`      // Default notifications.dlq.
}

// All returns every topic name, in a stable order.
func (t Topics) All() []string {
	return []string{t.Raw, t.RawDLQ, t.Readings, t.ReadingsDLQ, t.ComplianceRecords, t.ComplianceRecordsDLQ, t.Notifications, t.NotificationsDLQ}
}

// DLQs returns the dead-letter topics, in a stable order.
func (t Topics) DLQs() []string {
	return []string{t.RawDLQ, t.ReadingsDLQ, t.ComplianceRecordsDLQ, t.NotificationsDLQ}
}

// SchemaRegistry configures the optional Confluent-compatible schema registry
// (Redpanda has one built in). When URL is empty, Avro values are written
// without the wire-format header and decoded from the schemas in schemas/.
type SchemaRegistry struct {
	// URL of the registry. Default empty (none). Environment: SCHEMA_REGISTRY_URL.
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// MQTT configures the connection to the MQTT v5 broker.
type MQTT struct {
	// Broker is a host name, or a URL (mqtt://, tcp://, mqtts://, ssl://,
	// ws://, wss://) that may carry its own port. Default "localhost".
	// Environment: MQTT_BROKER.
	Broker string `yaml:"broker"`
	// Port is used when Broker has none. Default 1883. Environment: MQTT_PORT.
	Port int `yaml:"port"`
	// Username and Password authenticate; empty means anonymous.
	// Environment: MQTT_USERNAME, MQTT_PASSWORD.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// ClientID must be fixed per instance so the broker resumes the persistent
	// session after a restart. Default empty: "stackvps-<hostname>".
	ClientID string `yaml:"client_id"`
	// KeepAlive is the MQTT keepalive. Default 30s.
	KeepAlive Duration `yaml:"keep_alive"`
	// SessionExpiry is how long the broker keeps the session (and queues QoS 1
	// messages) while the client is away. Default 24h.
	SessionExpiry Duration `yaml:"session_expiry"`
	// ConnectTimeout bounds one connection attempt. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
}

// Pipeline configures the stage runtime shared by every Kafka stage.
type Pipeline struct {
	// GroupPrefix prefixes every consumer group: a stage's group is
	// "<prefix>-<stage>". Default "stackvps".
	GroupPrefix string `yaml:"group_prefix"`
	// ShutdownTimeout bounds the drain after SIGTERM. Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// RetryInitial is the first backoff after a transient error. Default 200ms.
	RetryInitial Duration `yaml:"retry_initial"`
	// RetryMax caps the backoff. Default 30s.
	RetryMax Duration `yaml:"retry_max"`
	// MaxPollRecords caps one poll. Default 5000.
	MaxPollRecords int `yaml:"max_poll_records"`
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (crashed) before giving its partitions to the others.
	// Shorter recovers faster from a kill; too short evicts members during
	// long GC or network pauses. Default 45s (Kafka's default); the broker
	// allows 6s to 30m.
	SessionTimeout Duration `yaml:"session_timeout"`
}

// Bridge configures the MQTT -> telemetry.raw stage.
type Bridge struct {
	// Subscriptions are the MQTT topic filters. Default ["telemetry/+/+"].
	Subscriptions []string `yaml:"subscriptions"`
	// ShareGroup makes the subscriptions shared ($share/<group>/<filter>) so
	// several bridges split the load. Default empty: one bridge per broker
	// subscription, on a persistent session the broker queues for. Mind
	// that Mosquitto 2.0 does not route to a shared subscription it restored
	// from its persistence file: after a broker restart, messages published
	// before the bridges subscribe again are answered "no matching
	// subscribers" and dropped (reproduced with mosquitto_sub/mosquitto_pub
	// on 2.0.11; plain subscriptions keep them). Share only with a broker
	// that keeps shared subscriptions across restarts.
	ShareGroup string `yaml:"share_group"`
	// TopicPattern extracts the device id and, optionally, the provider from
	// the MQTT topic: segments "{device}" and "{provider}" capture, "+" skips
	// one segment, "#" the rest. Default "telemetry/{provider}/{device}".
	TopicPattern string `yaml:"topic_pattern"`
	// ReceiveMaximum bounds the messages in flight between the broker and
	// Kafka (MQTT v5 Receive Maximum). Default 1000.
	ReceiveMaximum int `yaml:"receive_maximum"`
}

// Normalize configures the telemetry.raw -> telemetry.readings stage.
type Normalize struct {
	// ProvidersDir holds extra provider specs (*.yaml) beside the built-in
	// ones. Default empty.
	ProvidersDir string `yaml:"providers_dir"`
	// DefaultProvider decodes records that carry no provider header (topics
	// whose pattern names none). Default empty: such records are
	// dead-lettered as unknown_provider.
	DefaultProvider string `yaml:"default_provider"`
	// MaxFutureSkew is how far past the stage's clock a reading may be
	// stamped before it is dead-lettered (reason future_timestamp) instead of
	// moving any window. Default 10m.
	MaxFutureSkew Duration `yaml:"max_future_skew"`
	// MaxAge is how old a reading may be (reason too_old beyond). Default
	// 8760h (a year): devices upload backlogs after long outages.
	MaxAge Duration `yaml:"max_age"`
	// DeviceRefresh is how often the device -> point map is reloaded; a
	// change in the devices table also reloads it at once. Default 30s.
	DeviceRefresh Duration `yaml:"device_refresh"`
	// Ranges flag readings outside [min, max] (canonical units) as
	// out_of_range. Default flow [-1, 100000] L/s, totalizer [0, 1e12] m3,
	// level [-10, 3000] m.
	Ranges map[string]Range `yaml:"ranges"`
	// Spike flags a reading that differs from the device's previous one by
	// more than this (canonical units). Default flow 500, level 5.
	Spike map[string]float64 `yaml:"spike"`
	// StaleAfter flags as stale the readings of a variable that repeats the
	// exact same value this many times in a row. Default level 60.
	StaleAfter map[string]int `yaml:"stale_after"`
	// TotalizerRollover is, per provider, the totalizer value (m3) at which
	// its counter wraps to zero; a drop from near it is a rollover, any other
	// drop a reset. Default lorawan-ttn 4294967.296 (2^32 L).
	TotalizerRollover map[string]float64 `yaml:"totalizer_rollover"`
}

// Range is a closed interval.
type Range struct {
	Min float64 `yaml:"min"`
	Max float64 `yaml:"max"`
}

// Sink configures the telemetry.readings -> readings (TimescaleDB) stage.
type Sink struct {
	// BatchSize caps the rows of one COPY transaction. Default 10000.
	BatchSize int `yaml:"batch_size"`
	// Linger is how long a batch waits to fill. Default 100ms.
	Linger Duration `yaml:"linger"`
}

// Aggregate configures the telemetry.readings -> compliance.records stage:
// event-time windows of one minute and one hour per point and variable.
type Aggregate struct {
	// AllowedLateness is how long after its hour (plus the slot minute), on
	// the arrival clock, a window keeps taking late readings, each
	// re-emitting it as a correction with a higher version; later readings
	// are dead-lettered (reason too_late) and counted. They are still stored
	// in readings. Default 2h.
	AllowedLateness Duration `yaml:"allowed_lateness"`
	// ClockSkew: readings stamped further ahead of the stage's clock are
	// quarantined to the readings dead-letter topic (reason clock_skew)
	// instead of moving any watermark. It must be at least
	// normalize.max_future_skew, or readings stored in the table would be
	// missing from the compliance records. Default 10m.
	ClockSkew Duration `yaml:"clock_skew"`
	// IdleTimeout closes the windows of a device that sent nothing for this
	// long, on processing time, so an idle device never holds others back.
	// Default 10m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ExpectedInterval is a point's reporting cadence, the base of the
	// completeness figures (readings expected vs received). Default 1m.
	ExpectedInterval Duration `yaml:"expected_interval"`
	// ValueMode is how a compliance record takes flow and level from its
	// hour: "instant" (the reading at the slot instant, the start of the next
	// hour, exact 1-minute match) or "mean". Default instant.
	ValueMode string `yaml:"value_mode"`
}

// Rollups configures the readings_1m, readings_1h and readings_1d rollups
// (continuous aggregates on TimescaleDB, tables refreshed by the pipeline on
// plain PostgreSQL), and compression and retention.
type Rollups struct {
	// DayTimezone is the zone readings_1d buckets days in. Default
	// America/Santiago.
	DayTimezone string `yaml:"day_timezone"`
	// RefreshDelay coalesces the buckets touched by writes for this long
	// before refreshing them, so late readings never cause a refresh storm.
	// Default 5s.
	RefreshDelay Duration `yaml:"refresh_delay"`
	// CompressAfter compresses raw chunks older than this (TimescaleDB only;
	// 0 disables). Default 0.
	CompressAfter Duration `yaml:"compress_after"`
	// RawRetention drops raw readings older than this; 0 keeps them forever.
	// It must exceed every rollup's refresh window. Default 0.
	RawRetention Duration `yaml:"raw_retention"`
}

// API configures the query API (stage api).
type API struct {
	// MaxRange caps the time range of one raw-data query. Default 744h (31 days).
	MaxRange Duration `yaml:"max_range"`
	// DefaultPageSize and MaxPageSize bound a page of results. Defaults 1000
	// and 50000.
	DefaultPageSize int `yaml:"default_page_size"`
	MaxPageSize     int `yaml:"max_page_size"`
}

// Default returns the whole default tree. Every default lives here.
func Default() Config {
	return Config{
		Log:  Log{Level: "info", Format: "json"},
		HTTP: HTTP{Listen: ":8000", ReadTimeout: Duration(30 * time.Second), WriteTimeout: Duration(5 * time.Minute)},
		Database: Database{
			URL:            "postgres://stackvps@localhost:5432/stackvps?sslmode=disable",
			MaxConns:       10,
			ConnectTimeout: Duration(10 * time.Second),
		},
		Kafka: Kafka{
			Brokers:  []string{"localhost:9092"},
			ClientID: "stackvps",
			Topics: Topics{
				Raw:                  "telemetry.raw",
				RawDLQ:               "telemetry.raw.dlq",
				Readings:             "telemetry.readings",
				ReadingsDLQ:          "telemetry.readings.dlq",
				ComplianceRecords:    "compliance.records",
				ComplianceRecordsDLQ: "compliance.records.dlq",
				Notifications:        "notifications",
				NotificationsDLQ:     "notifications.dlq",
			},
			Partitions:        12,
			ReplicationFactor: -1,
			Retention:         Duration(720 * time.Hour),
			DialTimeout:       Duration(10 * time.Second),
			Compression:       "lz4",
		},
		MQTT: MQTT{
			Broker:         "localhost",
			Port:           1883,
			KeepAlive:      Duration(30 * time.Second),
			SessionExpiry:  Duration(24 * time.Hour),
			ConnectTimeout: Duration(10 * time.Second),
		},
		Pipeline: Pipeline{
			GroupPrefix:     "stackvps",
			ShutdownTimeout: Duration(30 * time.Second),
			RetryInitial:    Duration(200 * time.Millisecond),
			RetryMax:        Duration(30 * time.Second),
			MaxPollRecords:  5000,
			SessionTimeout:  Duration(45 * time.Second),
		},
		Bridge: Bridge{
			Subscriptions:  []string{"telemetry/+/+"},
			ShareGroup:     "",
			TopicPattern:   "telemetry/{provider}/{device}",
			ReceiveMaximum: 1000,
		},
		Normalize: Normalize{
			MaxFutureSkew: Duration(10 * time.Minute),
			MaxAge:        Duration(8760 * time.Hour),
			DeviceRefresh: Duration(30 * time.Second),
			Ranges: map[string]Range{
				"flow":      {Min: -1, Max: 100000},
				"totalizer": {Min: 0, Max: 1e12},
				"level":     {Min: -10, Max: 3000},
			},
			Spike:             map[string]float64{"flow": 500, "level": 5},
			StaleAfter:        map[string]int{"level": 60},
			TotalizerRollover: map[string]float64{"lorawan-ttn": 4294967.296},
		},
		Sink: Sink{BatchSize: 10000, Linger: Duration(100 * time.Millisecond)},
		Aggregate: Aggregate{
			AllowedLateness:  Duration(2 * time.Hour),
			ClockSkew:        Duration(10 * time.Minute),
			IdleTimeout:      Duration(10 * time.Minute),
			ExpectedInterval: Duration(time.Minute),
			ValueMode:        "instant",
		},
		Rollups:    Rollups{DayTimezone: "America/Santiago", RefreshDelay: Duration(5 * time.Second)},
		API:        API{MaxRange: Duration(744 * time.Hour), DefaultPageSize: 1000, MaxPageSize: 50000},
		Compliance: defaultCompliance(),
		Submit:     defaultSubmit(),
		Alert:      defaultAlert(),
		Notify:     defaultNotify(),
		Scheduler:  defaultScheduler(),
	}
}

// Validate checks the whole tree and returns every problem joined, each
// message starting with its key.
func (c *Config) Validate() error {
	var p problems
	c.Log.validate(&p)
	c.HTTP.validate(&p)
	c.Database.validate(&p)
	c.Kafka.validate(&p)
	c.SchemaRegistry.validate(&p)
	c.MQTT.validate(&p)
	c.Pipeline.validate(&p)
	c.Bridge.validate(&p)
	c.Normalize.validate(&p)
	c.Sink.validate(&p)
	c.Aggregate.validate(&p)
	if c.Aggregate.ClockSkew < c.Normalize.MaxFutureSkew {
		p.addf("aggregate.clock_skew", "must be at least normalize.max_future_skew (%s), or readings stored in the table are missing from the compliance records; got %s",
			c.Normalize.MaxFutureSkew, c.Aggregate.ClockSkew)
	}
	c.Rollups.validate(&p)
	c.API.validate(&p)
	c.Compliance.validate(&p)
	c.Submit.validate(&p)
	c.Alert.validate(&p)
	c.Notify.validate(&p)
	c.Scheduler.validate(&p)
	return p.err()
}

func (l Log) validate(p *problems) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		p.addf("log.level", "must be one of debug, info, warn, error; got %q", l.Level)
	}
	if l.Format != "json" && l.Format != "text" {
		p.addf("log.format", "must be json or text; got %q", l.Format)
	}
}

func (h HTTP) validate(p *problems) {
	if _, port, err := net.SplitHostPort(h.Listen); err != nil {
		p.addf("http.listen", "must be host:port or :port; got %q", h.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.addf("http.listen", "port must be 0-65535; got %q", port)
	}
	p.positive("http.read_timeout", h.ReadTimeout)
	p.positive("http.write_timeout", h.WriteTimeout)
}

func (d Database) validate(p *problems) {
	if d.URL == "" {
		p.addf("database.url", "must not be empty (set DATABASE_URL)")
	} else if _, err := pgconn.ParseConfig(d.URL.Reveal()); err != nil {
		// pgconn's message redacts the password.
		p.addf("database.url", "invalid: %v", err)
	}
	if d.MaxConns < 1 {
		p.addf("database.max_conns", "must be at least 1; got %d", d.MaxConns)
	}
	p.positive("database.connect_timeout", d.ConnectTimeout)
}

func (k Kafka) validate(p *problems) {
	if len(k.Brokers) == 0 {
		p.addf("kafka.brokers", "must not be empty (set KAFKA_BROKERS)")
	}
	for i, b := range k.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			p.addf(fmt.Sprintf("kafka.brokers[%d]", i), "must be host:port; got %q", b)
		}
	}
	if k.ClientID == "" {
		p.addf("kafka.client_id", "must not be empty")
	}
	seen := map[string]string{}
	for _, t := range []struct{ key, name string }{
		{"kafka.topics.raw", k.Topics.Raw},
		{"kafka.topics.raw_dlq", k.Topics.RawDLQ},
		{"kafka.topics.readings", k.Topics.Readings},
		{"kafka.topics.readings_dlq", k.Topics.ReadingsDLQ},
		{"kafka.topics.compliance_records", k.Topics.ComplianceRecords},
		{"kafka.topics.notifications", k.Topics.Notifications},
	} {
		if err := validTopic(t.name); err != nil {
			p.addf(t.key, "%v", err)
			continue
		}
		if other, dup := seen[t.name]; dup {
			p.addf(t.key, "topic %q is already used by %s", t.name, other)
		}
		seen[t.name] = t.key
	}
	if k.Partitions < 1 {
		p.addf("kafka.partitions", "must be at least 1; got %d", k.Partitions)
	}
	if k.ReplicationFactor == 0 || k.ReplicationFactor < -1 {
		p.addf("kafka.replication_factor", "must be -1 (broker default) or at least 1; got %d", k.ReplicationFactor)
	}
	p.positive("kafka.retention", k.Retention)
	switch k.Compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		p.addf("kafka.compression", "must be one of none, gzip, snappy, lz4, zstd; got %q", k.Compression)
	}
	p.positive("kafka.dial_timeout", k.DialTimeout)
}

// validTopic applies Kafka's own rules for topic names.
func validTopic(name string) error {
	if name == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(name) > 249 {
		return fmt.Errorf("must be at most 249 characters")
	}
	if name == "." || name == ".." {
		return fmt.Errorf("must not be %q", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q has %q; only letters, digits, '.', '_' and '-' are allowed", name, r)
		}
	}
	return nil
}

func (s SchemaRegistry) validate(p *problems) {
	if s.URL == "" {
		return
	}
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.addf("schema_registry.url", "must be an http:// or https:// URL; got %q", s.URL)
	}
}

func (m MQTT) validate(p *problems) {
	if m.Broker == "" {
		p.addf("mqtt.broker", "must not be empty (set MQTT_BROKER)")
	} else if _, err := m.URL(); err != nil {
		p.addf("mqtt.broker", "%v", err)
	}
	if m.Port < 1 || m.Port > 65535 {
		p.addf("mqtt.port", "must be 1-65535; got %d", m.Port)
	}
	if m.Password != "" && m.Username == "" {
		p.addf("mqtt.password", "is set but mqtt.username is empty")
	}
	if len(m.ClientID) > 65535 {
		p.addf("mqtt.client_id", "is too long")
	}
	if ka := time.Duration(m.KeepAlive); ka < time.Second || ka > 65535*time.Second {
		p.addf("mqtt.keep_alive", "must be between 1s and 18h12m15s; got %s", ka)
	}
	if se := time.Duration(m.SessionExpiry); se <= 0 || se > 0xFFFFFFFE*time.Second {
		p.addf("mqtt.session_expiry", "must be positive (a persistent session is what keeps QoS 1 messages while the bridge is away); got %s", se)
	}
	p.positive("mqtt.connect_timeout", m.ConnectTimeout)
}

// URL returns the broker as a URL, applying Port when Broker names none.
func (m MQTT) URL() (*url.URL, error) {
	if !strings.Contains(m.Broker, "://") {
		if strings.ContainsAny(m.Broker, "/?#@ ") {
			return nil, fmt.Errorf("%q is neither a host name nor a URL", m.Broker)
		}
		return &url.URL{Scheme: "mqtt", Host: net.JoinHostPort(m.Broker, strconv.Itoa(m.Port))}, nil
	}
	u, err := url.Parse(m.Broker)
	if err != nil {
		return nil, fmt.Errorf("invalid URL: %w", err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("scheme %q is not one of mqtt, tcp, mqtts, ssl, tls, ws, wss", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", m.Broker)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(m.Port))
	}
	return u, nil
}

// EffectiveClientID returns ClientID, or "stackvps-<hostname>" when it is empty.
func (m MQTT) EffectiveClientID() string {
	if m.ClientID != "" {
		return m.ClientID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "local"
	}
	return "stackvps-" + host
}

func (pl Pipeline) validate(p *problems) {
	if pl.GroupPrefix == "" {
		p.addf("pipeline.group_prefix", "must not be empty")
	}
	p.positive("pipeline.shutdown_timeout", pl.ShutdownTimeout)
	p.positive("pipeline.retry_initial", pl.RetryInitial)
	p.positive("pipeline.retry_max", pl.RetryMax)
	if pl.RetryMax < pl.RetryInitial {
		p.addf("pipeline.retry_max", "must be at least pipeline.retry_initial (%s); got %s", pl.RetryInitial, pl.RetryMax)
	}
	if pl.MaxPollRecords < 1 {
		p.addf("pipeline.max_poll_records", "must be at least 1; got %d", pl.MaxPollRecords)
	}
	if st := pl.SessionTimeout.Std(); st < 6*time.Second || st > 30*time.Minute {
		p.addf("pipeline.session_timeout", "must be between 6s and 30m (the broker's group.min/max.session.timeout.ms); got %s", st)
	}
}

func (b Bridge) validate(p *problems) {
	if len(b.Subscriptions) == 0 {
		p.addf("bridge.subscriptions", "must not be empty")
	}
	for i, s := range b.Subscriptions {
		if err := validFilter(s); err != nil {
			p.addf(fmt.Sprintf("bridge.subscriptions[%d]", i), "%v", err)
		}
	}
	if strings.ContainsAny(b.ShareGroup, "/+#") {
		p.addf("bridge.share_group", "must not contain '/', '+' or '#'; got %q", b.ShareGroup)
	}
	if err := validPattern(b.TopicPattern); err != nil {
		p.addf("bridge.topic_pattern", "%v", err)
	}
	if b.ReceiveMaximum < 1 || b.ReceiveMaximum > 65535 {
		p.addf("bridge.receive_maximum", "must be 1-65535; got %d", b.ReceiveMaximum)
	}
}

// validFilter applies the MQTT rules for topic filters.
func validFilter(f string) error {
	if f == "" {
		return fmt.Errorf("must not be empty")
	}
	if strings.HasPrefix(f, "$share/") {
		return fmt.Errorf("%q: give the plain filter and set bridge.share_group instead", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%q: '#' must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%q: wildcards must fill a whole level", f)
		}
	}
	return nil
}

// validPattern checks a bridge topic pattern: it must capture {device}.
func validPattern(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("must not be empty")
	}
	levels := strings.Split(pattern, "/")
	var device bool
	for i, l := range levels {
		switch {
		case l == "{device}":
			if device {
				return fmt.Errorf("%q names {device} twice", pattern)
			}
			device = true
		case l == "{provider}", l == "+":
		case l == "#":
			if i != len(levels)-1 {
				return fmt.Errorf("%q: '#' must be the last level", pattern)
			}
		case strings.ContainsAny(l, "{}+#"):
			return fmt.Errorf("%q: level %q is not {device}, {provider}, + , # or a literal", pattern, l)
		}
	}
	if !device {
		return fmt.Errorf("%q must capture {device}", pattern)
	}
	return nil
}

func (n Normalize) validate(p *problems) {
	p.positive("normalize.max_future_skew", n.MaxFutureSkew)
	p.positive("normalize.max_age", n.MaxAge)
	p.positive("normalize.device_refresh", n.DeviceRefresh)
	for _, v := range sortedKeys(n.Ranges) {
		if r := n.Ranges[v]; r.Min > r.Max {
			p.addf("normalize.ranges."+v, "min %g is above max %g", r.Min, r.Max)
		}
	}
	for _, v := range sortedKeys(n.Spike) {
		if n.Spike[v] <= 0 {
			p.addf("normalize.spike."+v, "must be positive; got %g", n.Spike[v])
		}
	}
	for _, v := range sortedKeys(n.StaleAfter) {
		if n.StaleAfter[v] < 2 {
			p.addf("normalize.stale_after."+v, "must be at least 2; got %d", n.StaleAfter[v])
		}
	}
	for _, v := range sortedKeys(n.TotalizerRollover) {
		if n.TotalizerRollover[v] <= 0 {
			p.addf("normalize.totalizer_rollover."+v, "must be positive; got %g", n.TotalizerRollover[v])
		}
	}
}

func (s Sink) validate(p *problems) {
	if s.BatchSize < 1 {
		p.addf("sink.batch_size", "must be at least 1; got %d", s.BatchSize)
	}
	p.positive("sink.linger", s.Linger)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (a Aggregate) validate(p *problems) {
	p.positive("aggregate.allowed_lateness", a.AllowedLateness)
	p.positive("aggregate.clock_skew", a.ClockSkew)
	p.positive("aggregate.idle_timeout", a.IdleTimeout)
	p.positive("aggregate.expected_interval", a.ExpectedInterval)
	if a.ExpectedInterval.Std() > time.Hour {
		p.addf("aggregate.expected_interval", "must be at most 1h (records are hourly); got %s", a.ExpectedInterval)
	}
	if a.ValueMode != "instant" && a.ValueMode != "mean" {
		p.addf("aggregate.value_mode", "must be instant or mean; got %q", a.ValueMode)
	}
}

func (r Rollups) validate(p *problems) {
	if _, err := time.LoadLocation(r.DayTimezone); err != nil || r.DayTimezone == "" {
		p.addf("rollups.day_timezone", "must be an IANA time zone such as America/Santiago; got %q", r.DayTimezone)
	}
	p.positive("rollups.refresh_delay", r.RefreshDelay)
	if r.CompressAfter < 0 {
		p.addf("rollups.compress_after", "must not be negative; got %s", r.CompressAfter)
	}
	if r.RawRetention < 0 {
		p.addf("rollups.raw_retention", "must not be negative; got %s", r.RawRetention)
	}
	if r.RawRetention > 0 && r.RawRetention.Std() < 31*24*time.Hour {
		p.addf("rollups.raw_retention", "must be 0 (keep) or at least 744h, so rollups can still be refreshed from raw readings; got %s", r.RawRetention)
	}
	if r.RawRetention > 0 && r.CompressAfter > 0 && r.CompressAfter >= r.RawRetention {
		p.addf("rollups.compress_after", "must be below rollups.raw_retention (%s); got %s", r.RawRetention, r.CompressAfter)
	}
}

func (a API) validate(p *problems) {
	p.positive("api.max_range", a.MaxRange)
	if a.DefaultPageSize < 1 {
		p.addf("api.default_page_size", "must be at least 1; got %d", a.DefaultPageSize)
	}
	if a.MaxPageSize < a.DefaultPageSize {
		p.addf("api.max_page_size", "must be at least api.default_page_size (%d); got %d", a.DefaultPageSize, a.MaxPageSize)
	}
}
