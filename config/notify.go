package config

import (
	"net/url"
	"text/template"
	"time"
)

// Notify configures the notifications -> people stage: email, SMS, webhook
// and in-app channels.
type Notify struct {
	// MaxAttempts bounds the deliveries of one notification on one
	// channel. Default 8.
	MaxAttempts int `yaml:"max_attempts"`
	// Concurrency is the number of deliveries in flight per channel; each
	// channel has its own workers, so a channel that is down never holds
	// up the others. Default 4.
	Concurrency int `yaml:"concurrency"`
	// PollInterval is how often each channel looks for due deliveries
	// when nothing woke it (retries, other replicas' work). Default 1s.
	PollInterval Duration `yaml:"poll_interval"`
	// RetryInitial is the wait before the first retry of a failed
	// delivery; each retry doubles it, with jitter. Default 30s.
	RetryInitial Duration `yaml:"retry_initial"`
	// RetryMax caps the wait between retries. Default 1h.
	RetryMax Duration `yaml:"retry_max"`
	// ClaimTimeout is how long a delivery stays claimed ("sending") by the
	// replica sending it. A delivery still "sending" after it belongs to
	// a replica that died mid-send and is sent again with the same
	// idempotency key. It must exceed every channel's timeout. Default 2m.
	ClaimTimeout Duration `yaml:"claim_timeout"`
	// TimeZone renders the time of notifications about no point (system,
	// daily_report to administrators) when they carry no time_zone.
	// Default America/Santiago.
	TimeZone string `yaml:"time_zone"`
	// Email is the SMTP channel.
	Email NotifyEmail `yaml:"email"`
	// SMS is the HTTP SMS provider channel.
	SMS NotifySMS `yaml:"sms"`
	// Webhook is the signed webhook channel.
	Webhook NotifyWebhook `yaml:"webhook"`
}

// NotifyEmail configures sending email over SMTP. With Host empty email
// deliveries fail at once, saying the channel is not configured.
type NotifyEmail struct {
	// Host is the SMTP server. Default empty (email disabled).
	Host string `yaml:"host"`
	// Port is the SMTP port. Default 587.
	Port int `yaml:"port"`
	// Username and Password authenticate with AUTH PLAIN; empty username
	// means no authentication. Set the password from the environment
	// (STACKVPS_NOTIFY_EMAIL_PASSWORD).
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// From is the sender address. Default "Stack VPS <notificaciones@localhost>".
	From string `yaml:"from"`
	// Security is starttls (required STARTTLS), tls (implicit TLS, port
	// 465) or none (plain text; only for a relay on localhost). Default
	// starttls.
	Security string `yaml:"security"`
	// Timeout bounds one message's whole SMTP session. Default 30s.
	Timeout Duration `yaml:"timeout"`
}

// NotifySMS configures the HTTP API of an SMS provider. With Endpoint empty
// SMS deliveries fail at once, saying the channel is not configured.
type NotifySMS struct {
	// Endpoint is the URL messages are POSTed to. Default empty (SMS
	// disabled).
	Endpoint string `yaml:"endpoint"`
	// Token is sent as "Authorization: Bearer <token>" when set. Set it
	// from the environment (STACKVPS_NOTIFY_SMS_TOKEN).
	Token Secret `yaml:"token"`
	// Sender is the sender id or number the provider shows. Default StackVPS.
	Sender string `yaml:"sender"`
	// BodyTemplate is the request body, a Go text/template over .To,
	// .From, .Text and .Reference (the idempotency key), with the
	// function json that quotes a string. Default a JSON object with
	// those four fields.
	BodyTemplate string `yaml:"body_template"`
	// ContentType is the request's Content-Type. Default application/json.
	ContentType string `yaml:"content_type"`
	// ResponseIDField names the top-level field of the provider's JSON
	// answer that holds its message id. Default id.
	ResponseIDField string `yaml:"response_id_field"`
	// Timeout bounds one request. Default 15s.
	Timeout Duration `yaml:"timeout"`
}

// NotifyWebhook configures webhook deliveries.
type NotifyWebhook struct {
	// SigningSecret is the HMAC-SHA256 key of the X-StackVPS-Signature
	// header. Set it from the environment
	// (STACKVPS_NOTIFY_WEBHOOK_SIGNING_SECRET). Empty: webhook deliveries
	// fail, saying the secret is missing; nothing is sent unsigned.
	SigningSecret Secret `yaml:"signing_secret"`
	// Timeout bounds one request. Default 10s.
	Timeout Duration `yaml:"timeout"`
	// AllowPrivateNetworks lets webhooks reach loopback, private,
	// link-local and other non-public addresses. Users choose their
	// webhook URLs, so by default they cannot make notify call services
	// inside the operator's network. Default false.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
}

// DefaultSMSBodyTemplate is the default notify.sms.body_template.
const DefaultSMSBodyTemplate = `{"to": {{json .To}}, "from": {{json .From}}, "text": {{json .Text}}, "reference": {{json .Reference}}}`

func defaultNotify() Notify {
	return Notify{
		MaxAttempts:  8,
		Concurrency:  4,
		PollInterval: Duration(time.Second),
		RetryInitial: Duration(30 * time.Second),
		RetryMax:     Duration(time.Hour),
		ClaimTimeout: Duration(2 * time.Minute),
		TimeZone:     "America/Santiago",
		Email: NotifyEmail{
			Port: 587, From: "Stack VPS <notificaciones@localhost>", Security: "starttls",
			Timeout: Duration(30 * time.Second),
		},
		SMS: NotifySMS{
			Sender: "StackVPS", BodyTemplate: DefaultSMSBodyTemplate, ContentType: "application/json",
			ResponseIDField: "id", Timeout: Duration(15 * time.Second),
		},
		Webhook: NotifyWebhook{Timeout: Duration(10 * time.Second)},
	}
}

func (n Notify) validate(p *problems) {
	if n.MaxAttempts < 1 {
		p.addf("notify.max_attempts", "must be at least 1; got %d", n.MaxAttempts)
	}
	if n.Concurrency < 1 || n.Concurrency > 256 {
		p.addf("notify.concurrency", "must be between 1 and 256; got %d", n.Concurrency)
	}
	p.positive("notify.poll_interval", n.PollInterval)
	p.positive("notify.retry_initial", n.RetryInitial)
	p.positive("notify.retry_max", n.RetryMax)
	if n.RetryMax < n.RetryInitial {
		p.addf("notify.retry_max", "must be at least notify.retry_initial (%s); got %s", n.RetryInitial, n.RetryMax)
	}
	if _, err := time.LoadLocation(n.TimeZone); err != nil || n.TimeZone == "" {
		p.addf("notify.time_zone", "must be an IANA time zone such as America/Santiago; got %q", n.TimeZone)
	}
	e := n.Email
	if e.Port < 1 || e.Port > 65535 {
		p.addf("notify.email.port", "must be a TCP port; got %d", e.Port)
	}
	switch e.Security {
	case "starttls", "tls", "none":
	default:
		p.addf("notify.email.security", "must be starttls, tls or none; got %q", e.Security)
	}
	if e.Host != "" && e.From == "" {
		p.addf("notify.email.from", "must not be empty when notify.email.host is set")
	}
	p.positive("notify.email.timeout", e.Timeout)
	s := n.SMS
	if s.Endpoint != "" {
		if u, err := url.Parse(s.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.addf("notify.sms.endpoint", "must be an http(s) URL; got %q", s.Endpoint)
		}
	}
	if _, err := template.New("sms").Funcs(template.FuncMap{"json": func(string) string { return "" }}).Parse(s.BodyTemplate); err != nil || s.BodyTemplate == "" {
		p.addf("notify.sms.body_template", "must be a Go text/template: %v", err)
	}
	if s.ContentType == "" {
		p.addf("notify.sms.content_type", "must not be empty")
	}
	p.positive("notify.sms.timeout", s.Timeout)
	p.positive("notify.webhook.timeout", n.Webhook.Timeout)
	for _, c := range []struct {
		key string
		d   Duration
	}{{"notify.email.timeout", e.Timeout}, {"notify.sms.timeout", s.Timeout}, {"notify.webhook.timeout", n.Webhook.Timeout}} {
		if c.d > 0 && n.ClaimTimeout <= c.d {
			p.addf("notify.claim_timeout", "must exceed %s (%s), or a slow send is taken for a dead one and sent twice; got %s", c.key, c.d, n.ClaimTimeout)
		}
	}
	p.positive("notify.claim_timeout", n.ClaimTimeout)
}
