package schemas_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/schemas"
)

// FuzzDecodeReading checks that Decode never panics, that every error wraps
// ErrBadRecord (no registry: nothing transient can happen), and that whatever
// decodes re-encodes and decodes to the same encoding.
//
//	go test ./schemas -run '^$' -fuzz FuzzDecodeReading -fuzztime 20s
func FuzzDecodeReading(f *testing.F) {
	c := readingCodec(f, noRegistry)
	for _, r := range []schemas.Reading{fullReading(), nullReading()} {
		b, err := c.Encode(&r)
		require.NoError(f, err)
		f.Add(b)
		f.Add(frame(1, b))
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte("garbage"))

	f.Fuzz(func(t *testing.T, b []byte) {
		var got schemas.Reading
		if err := c.Decode(b, &got); err != nil {
			require.ErrorIs(t, err, schemas.ErrBadRecord)
			return
		}
		enc, err := c.Encode(&got)
		require.NoError(t, err, "a decoded record must encode")
		var again schemas.Reading
		require.NoError(t, c.Decode(enc, &again))
		enc2, err := c.Encode(&again)
		require.NoError(t, err)
		require.Equal(t, enc, enc2)
	})
}

// FuzzDecodeNotification is FuzzDecodeReading for the record with a map,
// whose block counts come from the input.
//
//	go test ./schemas -run '^$' -fuzz FuzzDecodeNotification -fuzztime 20s
func FuzzDecodeNotification(f *testing.F) {
	c, err := schemas.NewNotificationCodec(f.Context(), noRegistry, notificationsTopic)
	require.NoError(f, err)
	for _, n := range []schemas.Notification{fullNotification(), nullNotification()} {
		b, err := c.Encode(&n)
		require.NoError(f, err)
		f.Add(b)
		f.Add(frame(1, b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got schemas.Notification
		if err := c.Decode(b, &got); err != nil {
			require.ErrorIs(t, err, schemas.ErrBadRecord)
			return
		}
		enc, err := c.Encode(&got)
		require.NoError(t, err, "a decoded record must encode")
		var again schemas.Notification
		require.NoError(t, c.Decode(enc, &again))
		require.Equal(t, got, again)
	})
}
