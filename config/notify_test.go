package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/config"
)

func TestNotifyValidation(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"security", []string{"STACKVPS_NOTIFY_EMAIL_SECURITY=ssl"}, "notify.email.security: must be starttls, tls or none"},
		{"claim timeout below a channel timeout", []string{"STACKVPS_NOTIFY_CLAIM_TIMEOUT=5s"},
			"notify.claim_timeout: must exceed notify.email.timeout (30s)"},
		{"sms endpoint", []string{"STACKVPS_NOTIFY_SMS_ENDPOINT=ftp://x"}, "notify.sms.endpoint: must be an http(s) URL"},
		{"sms template", []string{"STACKVPS_NOTIFY_SMS_BODY_TEMPLATE={{.To"}, "notify.sms.body_template: must be a Go text/template"},
		{"retry max below initial", []string{"STACKVPS_NOTIFY_RETRY_MAX=1s"}, "notify.retry_max: must be at least notify.retry_initial"},
		{"zone", []string{"STACKVPS_NOTIFY_TIME_ZONE=Mars/Olympus"}, "notify.time_zone: must be an IANA time zone"},
		{"concurrency", []string{"STACKVPS_NOTIFY_CONCURRENCY=0"}, "notify.concurrency: must be between 1 and 256"},
		{"port", []string{"STACKVPS_NOTIFY_EMAIL_PORT=0"}, "notify.email.port: must be a TCP port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load("", tt.env)
			require.ErrorContains(t, err, tt.want)
		})
	}
	cfg, err := config.Load("", []string{"STACKVPS_NOTIFY_WEBHOOK_SIGNING_SECRET=s3cret", "STACKVPS_NOTIFY_EMAIL_HOST=smtp.example",
		"STACKVPS_NOTIFY_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true"})
	require.NoError(t, err)
	require.Equal(t, "s3cret", cfg.Notify.Webhook.SigningSecret.Reveal())
	require.NotContains(t, cfg.Notify.Webhook.SigningSecret.String(), "s3cret")
	require.True(t, cfg.Notify.Webhook.AllowPrivateNetworks)
	require.Equal(t, "smtp.example", cfg.Notify.Email.Host)
}
