package notify_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/stages/notify"
)

func TestSignature(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"n-1"}`)
	at := time.Unix(1_760_000_000, 0)
	h := notify.Sign(secret, at, body)
	require.Regexp(t, `^t=1760000000,v1=[0-9a-f]{64}$`, h)

	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, h, body, at.Add(time.Minute), nil},
		{"valid slightly early clock", secret, h, body, at.Add(-time.Minute), nil},
		{"replayed after the tolerance", secret, h, body, at.Add(6 * time.Minute), notify.ErrStale},
		{"body changed", secret, h, []byte(`{"id":"n-2"}`), at, notify.ErrBadSignature},
		{"wrong secret", []byte("other"), h, body, at, notify.ErrBadSignature},
		{"timestamp changed", secret, "t=1760000001," + h[len("t=1760000000,"):], body, at, notify.ErrBadSignature},
		{"malformed", secret, "v1=zz", body, at, notify.ErrBadSignature},
		{"rotation: any v1 matches", secret, h + ",v1=" + "00", body, at, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notify.VerifySignature(tt.secret, tt.header, tt.body, 5*time.Minute, tt.now)
			if tt.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.want)
			}
		})
	}
}
