package bridge

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPatternMatch(t *testing.T) {
	cases := []struct {
		name         string
		pattern      string
		topic        string
		wantDevice   string
		wantProvider string
		wantOK       bool
	}{
		{name: "default pattern", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry/kunak/k-0042", wantDevice: "k-0042", wantProvider: "kunak", wantOK: true},
		{name: "default pattern keeps level bytes as they are", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry/Prov.X/dev 1:ä", wantDevice: "dev 1:ä", wantProvider: "Prov.X", wantOK: true},
		{name: "default pattern with empty provider level", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry//dev1", wantDevice: "dev1", wantProvider: "", wantOK: true},
		{name: "default pattern, literal mismatch", pattern: "telemetry/{provider}/{device}",
			topic: "telemetri/kunak/k1"},
		{name: "default pattern, too few levels", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry/kunak"},
		{name: "default pattern, too many levels", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry/kunak/k1/extra"},
		{name: "default pattern, empty device level", pattern: "telemetry/{provider}/{device}",
			topic: "telemetry/x/"},
		{name: "default pattern, empty topic", pattern: "telemetry/{provider}/{device}",
			topic: ""},
		{name: "plus skips one level", pattern: "sensors/{device}/+/up",
			topic: "sensors/s-7/lorawan/up", wantDevice: "s-7", wantOK: true},
		{name: "plus skips an empty level", pattern: "sensors/{device}/+/up",
			topic: "sensors/s-7//up", wantDevice: "s-7", wantOK: true},
		{name: "plus pattern, trailing literal mismatch", pattern: "sensors/{device}/+/up",
			topic: "sensors/s-7/lorawan/down"},
		{name: "plus pattern, too few levels", pattern: "sensors/{device}/+/up",
			topic: "sensors/s-7/up"},
		{name: "plus pattern, too many levels", pattern: "sensors/{device}/+/up",
			topic: "sensors/s-7/lorawan/up/x"},
		{name: "hash with rest", pattern: "a/{device}/#",
			topic: "a/d1/b/c", wantDevice: "d1", wantOK: true},
		{name: "hash with one rest level", pattern: "a/{device}/#",
			topic: "a/d1/b", wantDevice: "d1", wantOK: true},
		{name: "hash with empty rest", pattern: "a/{device}/#",
			topic: "a/d1", wantDevice: "d1", wantOK: true},
		{name: "hash with empty trailing level", pattern: "a/{device}/#",
			topic: "a/d1/", wantDevice: "d1", wantOK: true},
		{name: "hash, too few levels for the device", pattern: "a/{device}/#",
			topic: "a"},
		{name: "hash, empty device level", pattern: "a/{device}/#",
			topic: "a//b"},
		{name: "hash, literal mismatch", pattern: "a/{device}/#",
			topic: "b/d1/c"},
		{name: "device only", pattern: "{device}",
			topic: "d1", wantDevice: "d1", wantOK: true},
		{name: "device only, too many levels", pattern: "{device}",
			topic: "d1/x"},
		{name: "device only, empty topic", pattern: "{device}",
			topic: ""},
		{name: "device only, leading slash", pattern: "{device}",
			topic: "/d1"},
		{name: "provider after device", pattern: "x/{device}/{provider}",
			topic: "x/d9/p9", wantDevice: "d9", wantProvider: "p9", wantOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := compilePattern(tc.pattern)
			require.NoError(t, err)
			device, provider, ok := p.match(tc.topic)
			require.Equal(t, tc.wantOK, ok, "match(%q) against %q", tc.topic, tc.pattern)
			if !tc.wantOK {
				// A rejected topic yields no device: the bridge must not key a
				// dead letter by a half-matched device id.
				require.Empty(t, device)
				return
			}
			require.Equal(t, tc.wantDevice, device)
			require.Equal(t, tc.wantProvider, provider)
		})
	}
}

func TestCompilePatternRejects(t *testing.T) {
	cases := []struct {
		name        string
		pattern     string
		errContains string
	}{
		{name: "empty", pattern: "", errContains: "must capture {device}"},
		{name: "no device", pattern: "telemetry/{provider}/+", errContains: "must capture {device}"},
		{name: "only hash", pattern: "#", errContains: "must capture {device}"},
		{name: "device without braces", pattern: "telemetry/device", errContains: "must capture {device}"},
		{name: "hash first", pattern: "#/{device}", errContains: "'#' must be the last level"},
		{name: "hash in the middle", pattern: "a/#/{device}", errContains: "'#' must be the last level"},
		{name: "hash before a final hash", pattern: "{device}/#/#", errContains: "'#' must be the last level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compilePattern(tc.pattern)
			require.Error(t, err)
			require.ErrorContains(t, err, tc.errContains)
			require.ErrorContains(t, err, tc.pattern, "the message names the pattern")
		})
	}
}

func TestCompilePatternAccepts(t *testing.T) {
	for _, p := range []string{
		"telemetry/{provider}/{device}",
		"sensors/{device}/+/up",
		"a/{device}/#",
		"{device}",
		"{device}/#",
		"+/{device}",
	} {
		t.Run(p, func(t *testing.T) {
			_, err := compilePattern(p)
			require.NoError(t, err)
		})
	}
}
