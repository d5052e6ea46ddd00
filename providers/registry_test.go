package providers_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/providers"
)

type nopDecoder struct{}

func (nopDecoder) Decode(context.Context, providers.Payload) ([]providers.Reading, error) {
	return nil, providers.ErrBadPayload
}

func TestRegistry(t *testing.T) {
	cases := []struct {
		name    string
		run     func(r *providers.Registry) error
		wantErr string
	}{
		{"register", func(r *providers.Registry) error { return r.Register("kunak-bin", nopDecoder{}) }, ""},
		{"duplicate", func(r *providers.Registry) error {
			require.NoError(t, r.Register("kunak-bin", nopDecoder{}))
			return r.Register("kunak-bin", nopDecoder{})
		}, `registering provider "kunak-bin": already registered`},
		{"empty name", func(r *providers.Registry) error { return r.Register("", nopDecoder{}) }, "empty name"},
		{"nil decoder", func(r *providers.Registry) error { return r.Register("x", nil) }, "nil decoder"},
		{"builtin twice", func(r *providers.Registry) error {
			require.NoError(t, providers.RegisterBuiltin(r))
			return providers.RegisterBuiltin(r)
		}, "already registered"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run(providers.NewRegistry())
			if c.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.wantErr)
		})
	}
}

func TestRegistryLookup(t *testing.T) {
	r := providers.NewRegistry()
	require.NoError(t, providers.RegisterBuiltin(r))
	require.Equal(t, []string{"acme-registers", "generic-json", "lorawan-ttn"}, r.Names())
	for _, name := range r.Names() {
		d, err := r.Lookup(name)
		require.NoError(t, err)
		require.NotNil(t, d)
	}
	_, err := r.Lookup("kunak-bin")
	require.ErrorIs(t, err, providers.ErrUnknownProvider)
	require.ErrorContains(t, err, `unknown provider "kunak-bin"`)
}

// TestDecodeConcurrently runs every golden payload through its decoder
// from several goroutines (meaningful under -race).
func TestDecodeConcurrently(t *testing.T) {
	reg := newTestRegistry(t)
	cases := goldenCases(t, "")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, c := range cases {
				d, err := reg.Lookup(c.provider)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = d.Decode(t.Context(), c.payload)
			}
		})
	}
	wg.Wait()
}
