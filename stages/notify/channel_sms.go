package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/template"

	"github.com/stackvps/stackvps/config"
)

// SMS sends text messages through an HTTP provider API: one POST per
// message to notify.sms.endpoint with the body notify.sms.body_template,
// "Authorization: Bearer <token>" and "Idempotency-Key: <notification id>".
// The idempotency key is also the template's .Reference, for providers that
// take a client reference in the body instead.
//
// "Once" for SMS: a resend after notify died mid-request carries the same
// key; a provider that honours idempotency keys or client references sends
// the message once, one that does not may send it twice.
type SMS struct {
	cfg      config.NotifySMS
	tmpl     *template.Template
	client   *http.Client
	disabled error
}

// SMSFields are what the body template sees.
type SMSFields struct {
	To, From, Text, Reference string
}

// NewSMS validates cfg. With cfg.Endpoint empty every Send fails
// permanently with ErrNotConfigured.
func NewSMS(cfg config.NotifySMS, client *http.Client) (*SMS, error) {
	s := &SMS{cfg: cfg, client: client}
	if cfg.Endpoint == "" {
		s.disabled = Permanent(fmt.Errorf("%w: notify.sms.endpoint is empty", ErrNotConfigured))
		return s, nil
	}
	t, err := template.New("sms").Funcs(template.FuncMap{"json": jsonString}).Parse(cfg.BodyTemplate)
	if err != nil {
		return nil, fmt.Errorf("notify.sms.body_template: %w", err)
	}
	s.tmpl = t
	if s.client == nil {
		s.client = noRedirectClient()
	}
	return s, nil
}

func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

// Send posts one message. 2xx is sent (the provider's message id read from
// its JSON answer, field notify.sms.response_id_field); 408, 429 and 5xx
// are retried; other statuses fail permanently.
func (s *SMS) Send(ctx context.Context, d Delivery) (string, error) {
	if s.disabled != nil {
		return "", s.disabled
	}
	if d.Destination == "" {
		return "", Permanent(errors.New("no phone number"))
	}
	var body bytes.Buffer
	if err := s.tmpl.Execute(&body, SMSFields{To: d.Destination, From: s.cfg.Sender, Text: d.Body, Reference: d.NotificationID}); err != nil {
		return "", Permanent(fmt.Errorf("rendering notify.sms.body_template: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout.Std())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Endpoint, &body)
	if err != nil {
		return "", Permanent(fmt.Errorf("building the request: %w", err))
	}
	req.Header.Set("Content-Type", s.cfg.ContentType)
	req.Header.Set("Idempotency-Key", d.NotificationID)
	req.Header.Set("User-Agent", userAgent)
	if tok := s.cfg.Token.Reveal(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// The endpoint may carry a key in its query: name only its host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("posting to the SMS provider at %s: %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := classifyHTTP(resp, snippet(answer)); err != nil {
		return "", fmt.Errorf("SMS provider: %w", err)
	}
	var fields map[string]any
	if json.Unmarshal(answer, &fields) == nil {
		if v, ok := fields[s.cfg.ResponseIDField]; ok && v != nil {
			return fmt.Sprint(v), nil
		}
	}
	return "", nil
}
