package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/stackvps/stackvps/config"
)

// Email sends plain-text email over SMTP, one session per message.
//
// "Once" for email: the message's Message-ID is derived from the
// notification id alone, so every attempt of one notification carries the
// same Message-ID (and the same Date). When notify dies after the server
// accepted the DATA but before it recorded "sent", the message is sent
// again after notify.claim_timeout; mail stores and clients that
// deduplicate on Message-ID (most threading clients, Gmail, many MTAs'
// duplicate filters) show it once, others may show it twice. SMTP has no
// stronger idempotency: at-least-once with a stable Message-ID is the
// honest contract.
type Email struct {
	cfg      config.NotifyEmail
	from     *mail.Address
	domain   string
	dialer   net.Dialer
	tlsConf  *tls.Config
	disabled error
}

// NewEmail validates cfg. With cfg.Host empty every Send fails permanently
// with ErrNotConfigured.
func NewEmail(cfg config.NotifyEmail) (*Email, error) {
	e := &Email{cfg: cfg}
	if cfg.Host == "" {
		e.disabled = Permanent(fmt.Errorf("%w: notify.email.host is empty", ErrNotConfigured))
		return e, nil
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("notify.email.from: %w", err)
	}
	e.from = from
	e.domain = "stackvps.local"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 && i+1 < len(from.Address) {
		e.domain = from.Address[i+1:]
	}
	e.tlsConf = &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
	return e, nil
}

// WithTLSConfig replaces the TLS configuration (tests trust their own CA).
func (e *Email) WithTLSConfig(c *tls.Config) *Email {
	e.tlsConf = c
	return e
}

// MessageID returns the Message-ID of a notification's email, without the
// angle brackets: the same for every attempt.
func (e *Email) MessageID(notificationID string) string {
	sum := sha256.Sum256([]byte("stackvps-notification\x00" + notificationID))
	return hex.EncodeToString(sum[:16]) + ".notify@" + e.domain
}

// Send delivers one message. SMTP 5xx answers are permanent; 4xx, network
// errors and timeouts are retried.
func (e *Email) Send(ctx context.Context, d Delivery) (string, error) {
	if e.disabled != nil {
		return "", e.disabled
	}
	to, err := mail.ParseAddress(d.Destination)
	if err != nil {
		return "", Permanent(fmt.Errorf("recipient address: %w", err))
	}
	msgID := e.MessageID(d.NotificationID)
	msg, err := e.compose(d, to, msgID)
	if err != nil {
		return "", Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout.Std())
	defer cancel()
	if err := e.deliver(ctx, to.Address, msg); err != nil {
		return "", classifySMTP(err)
	}
	return "<" + msgID + ">", nil
}

// compose writes the message: plain text, UTF-8, quoted-printable, with a
// Message-ID and Date that depend only on the notification.
func (e *Email) compose(d Delivery, to *mail.Address, msgID string) ([]byte, error) {
	var b bytes.Buffer
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", e.from.String())
	h("To", to.String())
	h("Subject", mime.QEncoding.Encode("utf-8", d.Subject))
	h("Date", d.CreatedAt.UTC().Format(time.RFC1123Z))
	h("Message-ID", "<"+msgID+">")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	h("Auto-Submitted", "auto-generated")
	h("X-StackVPS-Notification-Id", d.NotificationID)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(strings.ReplaceAll(d.Body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := qp.Write([]byte(body + "\r\n")); err != nil {
		return nil, fmt.Errorf("encoding the body: %w", err)
	}
	if err := qp.Close(); err != nil {
		return nil, fmt.Errorf("encoding the body: %w", err)
	}
	return b.Bytes(), nil
}

func (e *Email) deliver(ctx context.Context, to string, msg []byte) error {
	addr := net.JoinHostPort(e.cfg.Host, strconv.Itoa(e.cfg.Port))
	conn, err := e.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	var c *smtp.Client
	switch e.cfg.Security {
	case "tls":
		c = smtp.NewClient(tls.Client(conn, e.tlsConf))
	case "starttls":
		if c, err = smtp.NewClientStartTLS(conn, e.tlsConf); err != nil {
			_ = conn.Close()
			return fmt.Errorf("STARTTLS with %s: %w", addr, err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	if e.cfg.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", e.cfg.Username, e.cfg.Password.Reveal())); err != nil {
			return fmt.Errorf("authenticating: %w", err)
		}
	}
	if err := c.SendMail(e.from.Address, []string{to}, bytes.NewReader(msg)); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	// The message is accepted once DATA is answered 250; a failed QUIT
	// changes nothing.
	_ = c.Quit()
	return nil
}

// classifySMTP makes 5xx replies permanent and everything else retryable.
func classifySMTP(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return Permanent(err)
	}
	return err
}
