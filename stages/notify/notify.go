package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stackvps/stackvps/config"
	"github.com/stackvps/stackvps/pipeline"
	"github.com/stackvps/stackvps/schemas"
)

// Decoder decodes notifications values (schemas.Codec[schemas.Notification]).
// An error wrapping schemas.ErrBadRecord is permanent (the record is
// dead-lettered); any other is transient (the registry is unreachable).
type Decoder interface {
	Decode(b []byte, v *schemas.Notification) error
}

// Deps are the stage's collaborators.
type Deps struct {
	// Pool, Decoder, Registerer and Log are required.
	Pool       *pgxpool.Pool
	Decoder    Decoder
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Senders replaces the sender of a channel (tests); the channels
	// absent are built from the configuration. The in_app channel cannot
	// be replaced.
	Senders map[string]Sender
	// HTTPClient is used by the SMS and webhook channels; nil means a
	// client that does not follow redirects.
	HTTPClient *http.Client
	// Now is the clock of webhook signatures; nil means time.Now.
	Now func() time.Time
}

// Notifier is the notify stage: its Process (a pipeline.Processor) turns
// each notification record into one delivery row per channel, and Run
// delivers the rows. Both are safe for concurrent use; several replicas may
// share one database.
type Notifier struct {
	cfg     config.Notify
	deps    Deps
	pool    *pgxpool.Pool
	render  *Renderer
	senders map[string]Sender
	inApp   txSender
	met     *metrics
	log     *slog.Logger
	backoff pipeline.Backoff
	// wake holds one buffered signal channel per channel: Process pokes
	// it after queueing, so deliveries start without waiting for a poll.
	wake map[string]chan struct{}
}

// New validates cfg, builds the channels and registers the metrics.
func New(cfg config.Notify, deps Deps) (*Notifier, error) {
	if deps.Pool == nil || deps.Decoder == nil || deps.Registerer == nil || deps.Log == nil {
		return nil, errors.New("notify: pool, decoder, registerer and log are required")
	}
	if cfg.MaxAttempts < 1 || cfg.Concurrency < 1 || cfg.PollInterval <= 0 || cfg.RetryInitial <= 0 ||
		cfg.RetryMax < cfg.RetryInitial || cfg.ClaimTimeout <= 0 {
		return nil, errors.New("notify: max_attempts, concurrency, poll_interval, retry_initial, retry_max and claim_timeout must be positive (see config.Notify)")
	}
	r, err := NewRenderer()
	if err != nil {
		return nil, err
	}
	met, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Notifier{
		cfg: cfg, deps: deps, pool: deps.Pool, render: r, inApp: InApp{}, met: met,
		log:     deps.Log,
		backoff: pipeline.Backoff{Initial: cfg.RetryInitial.Std(), Max: cfg.RetryMax.Std()},
		senders: map[string]Sender{}, wake: map[string]chan struct{}{},
	}
	for ch, s := range deps.Senders {
		if !slices.Contains(Channels, ch) || ch == ChannelInApp {
			return nil, fmt.Errorf("notify: cannot replace the sender of channel %q", ch)
		}
		n.senders[ch] = s
	}
	if _, ok := n.senders[ChannelEmail]; !ok {
		e, err := NewEmail(cfg.Email)
		if err != nil {
			return nil, err
		}
		n.senders[ChannelEmail] = e
	}
	if _, ok := n.senders[ChannelSMS]; !ok {
		s, err := NewSMS(cfg.SMS, deps.HTTPClient)
		if err != nil {
			return nil, err
		}
		n.senders[ChannelSMS] = s
	}
	if _, ok := n.senders[ChannelWebhook]; !ok {
		n.senders[ChannelWebhook] = NewWebhook(cfg.Webhook, deps.HTTPClient, deps.Now)
	}
	for _, ch := range Channels {
		n.wake[ch] = make(chan struct{}, cfg.Concurrency)
	}
	if cfg.Webhook.SigningSecret == "" {
		n.log.Warn("notify.webhook.signing_secret is empty: webhook deliveries will fail until it is set")
	}
	return n, nil
}

// payload is the stored notification, and the webhook's JSON body.
type payload struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Severity  string            `json:"severity"`
	Point     *string           `json:"point"`
	Title     string            `json:"title"`
	Body      string            `json:"body"`
	Data      map[string]string `json:"data"`
	CreatedAt time.Time         `json:"created_at"`
}

// recipient is what the database says about a notification's user.
type recipient struct {
	email      string
	active     bool
	hasPrefs   bool
	prefActive bool
	types      []string
	channels   []string
	webhookURL string
	phone      string
	language   string
	pointName  string
	zone       string
}

// Process queues the deliveries of one notification: one row per channel of
// the user's subscription to the point (in_app and email for notifications
// about no point), rendered in the user's language, in one transaction.
// Rows that exist are left alone (the idempotency key is the notification
// id and the channel), so a replayed record queues nothing twice. It
// returns once the rows are committed: the runtime commits the Kafka offset
// after that. A record that cannot be decoded, or has no id or a user id
// that is not a number, is permanent (dead-lettered); database errors are
// transient. A notification for a user who no longer exists, is inactive,
// or is no longer subscribed is dropped and counted, not an error.
func (n *Notifier) Process(ctx context.Context, rec pipeline.Record) ([]pipeline.Record, error) {
	var no schemas.Notification
	if err := n.deps.Decoder.Decode(rec.Value, &no); err != nil {
		if errors.Is(err, schemas.ErrBadRecord) {
			return nil, pipeline.Permanent("bad_notification", err)
		}
		return nil, pipeline.Transient(err)
	}
	if no.ID == "" {
		return nil, pipeline.Permanent("bad_notification", errors.New("notification without id"))
	}
	userID, err := strconv.ParseInt(no.UserID, 10, 64)
	if err != nil || userID <= 0 {
		return nil, pipeline.Permanent("bad_notification", fmt.Errorf("notification %s: user_id %q is not a user id", no.ID, no.UserID))
	}
	outcome, queued, err := n.enqueue(ctx, userID, no)
	if err != nil {
		return nil, pipeline.Transient(fmt.Errorf("queueing notification %s: %w", no.ID, err))
	}
	n.met.notifications.WithLabelValues(outcome).Inc()
	for _, ch := range queued {
		n.met.deliveries.WithLabelValues(ch, "queued").Inc()
		n.poke(ch)
	}
	if outcome != "queued" {
		n.log.Debug("notification not queued", "notification_id", no.ID, "user_id", userID, "outcome", outcome)
	}
	return nil, nil
}

// poke wakes a worker of channel ch, if one is idle.
func (n *Notifier) poke(ch string) {
	select {
	case n.wake[ch] <- struct{}{}:
	default:
	}
}

// enqueue writes the delivery rows and returns the outcome and the channels
// it queued.
func (n *Notifier) enqueue(ctx context.Context, userID int64, no schemas.Notification) (string, []string, error) {
	point := ""
	if no.Point != nil {
		point = *no.Point
	}
	var rc recipient
	var hasUser bool
	err := func() error {
		var (
			prefActive                    *bool
			types, channels               []string
			webhook, phone, lang, name, z *string
		)
		err := n.pool.QueryRow(ctx, `SELECT u.email, u.active, pn.active, pn.notification_types, pn.channels,
				pn.webhook_url, pn.phone, pn.language, cp.name, cp.timezone
			FROM users u
			LEFT JOIN point_notifications pn ON pn.user_id = u.id AND pn.point = $2
			LEFT JOIN catchment_points cp ON cp.code = $2
			WHERE u.id = $1`, userID, point).Scan(&rc.email, &rc.active, &prefActive, &types, &channels,
			&webhook, &phone, &lang, &name, &z)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading user %d: %w", userID, err)
		}
		hasUser = true
		rc.hasPrefs = prefActive != nil
		rc.prefActive = prefActive != nil && *prefActive
		rc.types, rc.channels = types, channels
		rc.webhookURL, rc.phone, rc.language = deref(webhook), deref(phone), deref(lang)
		rc.pointName, rc.zone = deref(name), deref(z)
		return nil
	}()
	switch {
	case err != nil:
		return "", nil, err
	case !hasUser:
		return "skipped_unknown_user", nil, nil
	case !rc.active:
		return "skipped_inactive_user", nil, nil
	}
	// About no point (system, daily_report): in-app, and email when an
	// SMTP server is configured (otherwise every such email would fail).
	channels, lang, zone := []string{ChannelInApp}, no.Data["language"], no.Data["time_zone"]
	if n.cfg.Email.Host != "" {
		channels = append(channels, ChannelEmail)
	}
	if point != "" {
		switch {
		case !rc.hasPrefs || !rc.prefActive:
			return "skipped_not_subscribed", nil, nil
		case slices.Contains(knownTypes, no.Type) && !slices.Contains(rc.types, no.Type):
			return "skipped_not_subscribed", nil, nil
		}
		channels, lang = rc.channels, rc.language
		if rc.zone != "" {
			zone = rc.zone
		}
	}
	if zone == "" {
		zone = n.cfg.TimeZone
	}
	if !slices.Contains(Languages, lang) {
		lang = Languages[0]
	}
	if len(channels) == 0 {
		return "skipped_no_channels", nil, nil
	}
	view := NewView(no.ID, no.Type, no.Severity, no.Title, no.Body, point, rc.pointName, zone, no.Data, no.CreatedAt, lang)
	msg, err := n.render.Render(lang, view)
	if err != nil {
		// The templates are tested for every type and language; a failure
		// here is data the templates did not expect. Send the producer's
		// own title and body rather than nothing.
		n.log.Error("rendering failed; sending the notification's own text", "notification_id", no.ID, "err", err)
		msg = Message{Subject: no.Title, Body: no.Body, Short: no.Title}
	}
	data := no.Data
	if data == nil {
		data = map[string]string{}
	}
	body, err := json.Marshal(payload{ID: no.ID, Type: no.Type, Severity: no.Severity, Point: no.Point,
		Title: msg.Subject, Body: msg.Body, Data: data, CreatedAt: no.CreatedAt.UTC()})
	if err != nil {
		return "", nil, fmt.Errorf("encoding the payload: %w", err)
	}
	var queued []string
	err = pgx.BeginFunc(ctx, n.pool, func(tx pgx.Tx) error {
		queued = queued[:0]
		for _, ch := range channels {
			dest, text := "", msg.Body
			switch ch {
			case ChannelEmail:
				dest = rc.email
			case ChannelSMS:
				dest, text = rc.phone, msg.Short
			case ChannelWebhook:
				dest = rc.webhookURL
			}
			tag, err := tx.Exec(ctx, `INSERT INTO notification_deliveries (notification_id, channel, user_id, point, type,
					severity, language, destination, subject, body, payload, notification_created_at)
				VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7, $8, $9, $10, $11, $12)
				ON CONFLICT (notification_id, channel) DO NOTHING`,
				no.ID, ch, userID, point, no.Type, no.Severity, lang, dest, msg.Subject, text, body, no.CreatedAt)
			if err != nil {
				return fmt.Errorf("inserting the %s delivery: %w", ch, err)
			}
			if tag.RowsAffected() == 1 {
				queued = append(queued, ch)
			}
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	if len(queued) == 0 {
		return "duplicate", nil, nil
	}
	return "queued", queued, nil
}

// knownTypes are the types a subscription lists; a point notification of
// another type (none today) is delivered on the subscription's channels.
var knownTypes = []string{"threshold", "data_gap", "stuck_sensor", "totalizer_reset",
	"compliance_missing", "compliance_rejected", "daily_report"}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
