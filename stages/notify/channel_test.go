package notify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
)

// TestWebhookRefusesPrivateAddresses: by default a user's webhook URL
// cannot reach loopback or private addresses, and the error names the host
// only, never the URL's path (which often holds a token).
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	called := false
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	t.Cleanup(srv.Close)
	cfg := config.Default().Notify.Webhook
	cfg.SigningSecret = "s"
	w := NewWebhook(cfg, nil, nil)
	for _, url := range []string{srv.URL + "/hooks/T0K3N", "http://10.1.2.3/hooks/T0K3N", "http://[::1]:9/hooks/T0K3N", "http://169.254.169.254/latest/T0K3N"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := w.Send(ctx, Delivery{NotificationID: "n", Destination: url, Payload: []byte(`{}`), Attempt: 1})
		cancel()
		require.Error(t, err, url)
		require.True(t, IsPermanent(err), "%s: %v", url, err)
		require.ErrorIs(t, err, errNotPublic)
		require.NotContains(t, err.Error(), "T0K3N")
	}
	require.False(t, called)
}

func TestRedact(t *testing.T) {
	require.Equal(t, "550 5.1.1 <***@example.cl>: unknown; +***5678 invalid",
		redact("550 5.1.1 <ana.maria@example.cl>: unknown; +56912345678 invalid"))
}

func TestClassifyHTTP(t *testing.T) {
	for code, want := range map[int]string{200: "sent", 204: "sent", 400: "permanent", 404: "permanent", 410: "permanent",
		408: "retry", 429: "retry", 500: "retry", 503: "retry"} {
		resp := &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {"7"}}}
		err := classifyHTTP(resp, "x")
		got := "retry"
		switch {
		case err == nil:
			got = "sent"
		case IsPermanent(err):
			got = "permanent"
		}
		require.Equal(t, want, got, "HTTP %d", code)
		if got == "retry" {
			require.Equal(t, 7*time.Second, retryAfter(err))
		}
	}
}
