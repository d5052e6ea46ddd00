package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Channel names, as in point_notifications.channels and
// notification_deliveries.channel.
const (
	ChannelEmail   = "email"
	ChannelSMS     = "sms"
	ChannelWebhook = "webhook"
	ChannelInApp   = "in_app"
)

// Channels lists every channel.
var Channels = []string{ChannelEmail, ChannelSMS, ChannelWebhook, ChannelInApp}

// Delivery is one claimed attempt to deliver one notification on one
// channel.
type Delivery struct {
	// NotificationID is the idempotency key; with Channel, the row's key.
	NotificationID string
	Channel        string
	UserID         int64
	Point          string
	Type           string
	Severity       string
	Language       string
	// Destination is the email address, E.164 phone or webhook URL
	// (empty for in_app).
	Destination string
	// Subject and Body are the rendered message; for SMS, Body is the
	// short text.
	Subject, Body string
	// Payload is the webhook's JSON body: the notification as sent.
	Payload []byte
	// Attempt is this attempt's number, from 1.
	Attempt int
	// Reclaimed is true when the previous attempt was left "sending" by a
	// replica that stopped mid-send: the receiver may have it already.
	Reclaimed bool
	// CreatedAt is when the notification was created.
	CreatedAt time.Time
}

// A Sender delivers on one channel. Send returns the receiver's id of the
// message (may be empty), or an error: one wrapped by Permanent fails the
// delivery at once, any other is retried with backoff until
// notify.max_attempts. Send must honour ctx and be safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, d Delivery) (providerID string, err error)
}

// SendError is a classified delivery error.
type SendError struct {
	// Permanent errors are not retried.
	Permanent bool
	// RetryAfter is the receiver's requested wait (Retry-After); zero
	// when it asked for none.
	RetryAfter time.Duration
	Err        error
}

func (e *SendError) Error() string { return e.Err.Error() }
func (e *SendError) Unwrap() error { return e.Err }

// Permanent marks err as not worth retrying (the receiver refused the
// message for good). It returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &SendError{Permanent: true, Err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Permanent
}

func retryAfter(err error) time.Duration {
	var se *SendError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// ErrNotConfigured is wrapped by the permanent error of a channel whose
// configuration is missing (no SMTP host, no SMS endpoint, no webhook
// signing secret).
var ErrNotConfigured = errors.New("channel not configured")

// classifyHTTP turns a receiver's HTTP status into nil (2xx), a retryable
// error (408, 429, 5xx) or a permanent one (other statuses).
func classifyHTTP(resp *http.Response, snippet string) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		se := &SendError{Err: fmt.Errorf("HTTP %d: %s", code, snippet)}
		if s := resp.Header.Get("Retry-After"); s != "" {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				se.RetryAfter = time.Duration(n) * time.Second
			} else if t, err := http.ParseTime(s); err == nil {
				se.RetryAfter = time.Until(t)
			}
		}
		return se
	default:
		return Permanent(fmt.Errorf("HTTP %d: %s", code, snippet))
	}
}
