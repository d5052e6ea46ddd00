package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/stackvps/stackvps/config"
)

// Webhook headers.
const (
	// HeaderSignature carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// secret over t + "." + body>".
	HeaderSignature = "X-StackVPS-Signature"
	// HeaderIdempotencyKey carries the notification id: the same on every
	// attempt of one notification.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderAttempt is the attempt's number, from 1.
	HeaderAttempt = "X-StackVPS-Delivery-Attempt"
)

const userAgent = "stackvps-notify/1"

// Webhook POSTs the notification as JSON to the user's webhook_url:
// {"id","type","severity","point","title","body","data","created_at"}
// (title and body rendered from the type's template in the user's
// language; data as the producer sent it, for machines), with
// HeaderSignature (Stripe-style: the receiver recomputes the HMAC over the
// timestamp and the raw body with the shared secret and rejects timestamps
// older than its tolerance, so a captured request cannot be replayed later)
// and HeaderIdempotencyKey. 2xx is sent; 408, 429, 5xx, timeouts and network
// errors are retried with backoff; other 4xx fail permanently; redirects are
// not followed (permanent).
//
// "Once" for webhooks: a resend after notify died mid-request carries the
// same Idempotency-Key (and a fresh signature); a receiver that records the
// keys it processed sees each notification once.
type Webhook struct {
	secret   []byte
	timeout  time.Duration
	client   *http.Client
	now      func() time.Time
	disabled error
}

// NewWebhook returns the webhook channel. With no signing secret every Send
// fails permanently with ErrNotConfigured: nothing is sent unsigned.
func NewWebhook(cfg config.NotifyWebhook, client *http.Client, now func() time.Time) *Webhook {
	w := &Webhook{secret: []byte(cfg.SigningSecret.Reveal()), timeout: cfg.Timeout.Std(), client: client, now: now}
	if len(w.secret) == 0 {
		w.disabled = Permanent(fmt.Errorf("%w: notify.webhook.signing_secret is empty", ErrNotConfigured))
	}
	if w.client == nil {
		w.client = noRedirectClient()
		if !cfg.AllowPrivateNetworks {
			w.client.Transport = publicOnlyTransport()
		}
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w
}

// noRedirectClient is an HTTP client that returns redirects instead of
// following them: a POST must not turn into a GET elsewhere.
func noRedirectClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Send posts d.Payload to d.Destination.
func (w *Webhook) Send(ctx context.Context, d Delivery) (string, error) {
	if w.disabled != nil {
		return "", w.disabled
	}
	if d.Destination == "" {
		return "", Permanent(errors.New("no webhook URL"))
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Destination, bytes.NewReader(d.Payload))
	if err != nil {
		return "", Permanent(fmt.Errorf("building the request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderIdempotencyKey, d.NotificationID)
	req.Header.Set(HeaderAttempt, strconv.Itoa(d.Attempt))
	req.Header.Set(HeaderSignature, Sign(w.secret, w.now(), d.Payload))
	resp, err := w.client.Do(req)
	if err != nil {
		// The URL may carry a token (many webhook URLs do): name only its
		// host in errors, which end up in logs and last_error.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, errNotPublic) {
			return "", Permanent(fmt.Errorf("posting the webhook to %s: %w", req.URL.Host, err))
		}
		return "", fmt.Errorf("posting the webhook to %s: %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return "", Permanent(fmt.Errorf("HTTP %d: redirects are not followed; configure the final URL", resp.StatusCode))
	}
	if err := classifyHTTP(resp, snippet(answer)); err != nil {
		return "", fmt.Errorf("webhook: %w", err)
	}
	return "", nil
}

// errNotPublic refuses a webhook to an address that is not public.
var errNotPublic = errors.New("the address is not public (loopback, private, link-local...); notify.webhook.allow_private_networks is false")

// publicOnlyTransport dials only public unicast addresses. The check runs
// on the address actually dialled, after name resolution, so a name that
// resolves to an internal address (DNS rebinding included) is refused too.
func publicOnlyTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return fmt.Errorf("%w: %s", errNotPublic, host)
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() ||
				cgnat.Contains(ip) || ip.IsUnspecified() {
				return errNotPublic
			}
			return nil
		}}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // a proxy would dial on our behalf, unchecked
	t.DialContext = d.DialContext
	return t
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Sign returns the HeaderSignature value of body at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// Errors of VerifySignature.
var (
	ErrBadSignature = errors.New("webhook signature does not match")
	ErrStale        = errors.New("webhook timestamp outside the tolerance")
)

// VerifySignature checks a HeaderSignature value as a receiver should: the
// HMAC over the timestamp and the raw body matches (in constant time), and
// the timestamp is within tolerance of now (either side), which refuses
// replays of captured requests. Several v1 values (during a secret
// rotation) are accepted if any matches.
func VerifySignature(secret []byte, header string, body []byte, tolerance time.Duration, now time.Time) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		ok = ok || hmac.Equal(s, want)
	}
	if !ok {
		return ErrBadSignature
	}
	if age := now.Sub(time.Unix(sec, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: signed %s ago, tolerance %s", ErrStale, age.Round(time.Second), tolerance)
	}
	return nil
}

// snippet returns the start of a receiver's answer for last_error.
func snippet(b []byte) string {
	const limit = 200
	s := strings.TrimSpace(string(b))
	if len(s) > limit {
		s = s[:limit]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
