package compliance_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/compliance"
	"github.com/stackvps/stackvps/config"
)

func newKey(t *testing.T) config.Secret {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return config.Secret(base64.StdEncoding.EncodeToString(b))
}

func TestSealerRoundTrip(t *testing.T) {
	s, err := compliance.NewSealer(newKey(t))
	require.NoError(t, err)
	c := compliance.Credentials{Username: "20999888-2", Password: "s3cr3t ñandú"}
	a, err := s.Seal(c)
	require.NoError(t, err)
	b, err := s.Seal(c)
	require.NoError(t, err)
	require.NotEqual(t, a, b, "random nonce: two seals differ")
	require.Equal(t, byte(1), a[0], "version byte")
	require.NotContains(t, string(a), "s3cr3t")
	got, err := s.Open(a)
	require.NoError(t, err)
	require.Equal(t, c, got)
}

func TestSealerWrongKeyAndTamper(t *testing.T) {
	s1, err := compliance.NewSealer(newKey(t))
	require.NoError(t, err)
	s2, err := compliance.NewSealer(newKey(t))
	require.NoError(t, err)
	sealed, err := s1.Seal(compliance.Credentials{Username: "u", Password: "p"})
	require.NoError(t, err)

	_, err = s2.Open(sealed)
	require.ErrorIs(t, err, compliance.ErrWrongKey)
	require.Contains(t, err.Error(), "wrong compliance.credentials_key")

	for i := range sealed {
		tampered := bytes.Clone(sealed)
		tampered[i] ^= 0x01
		_, err := s1.Open(tampered)
		require.Error(t, err, "byte %d", i)
	}
	_, err = s1.Open(nil)
	require.Error(t, err)
	_, err = s1.Open(sealed[:10])
	require.Error(t, err)
}

func TestNewSealerKeyErrors(t *testing.T) {
	for _, key := range []config.Secret{"", "not base64!", config.Secret(base64.StdEncoding.EncodeToString(make([]byte, 16)))} {
		_, err := compliance.NewSealer(key)
		require.Error(t, err)
		require.Contains(t, err.Error(), "compliance.credentials_key")
	}
}

func TestCredentialsNeverPrint(t *testing.T) {
	c := compliance.Credentials{Username: "20999888-2", Password: "hunter2"}
	slot := compliance.Slot{ID: 7, Point: "p1", Credentials: c}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "creds", c, "slot", slot, "any", any(slot.Credentials))
	text := slog.New(slog.NewTextHandler(&buf, nil))
	text.Info("x", "creds", c, "slot", slot)
	j, err := json.Marshal(slot)
	require.NoError(t, err)
	for _, out := range []string{
		c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c),
		fmt.Sprintf("%v %+v", slot, slot), buf.String(), string(j),
	} {
		require.NotContains(t, out, "hunter2")
	}
	require.Contains(t, c.String(), "****")
}
