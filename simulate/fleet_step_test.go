package simulate_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stackvps/stackvps/simulate"
)

// Step spaces event times independently of the publishing rate, so a fleet
// can publish a day of one-minute history as fast as the broker takes it.
func TestStepSpacesEventTime(t *testing.T) {
	start := time.Date(2026, 6, 11, 0, 0, 0, 0, time.UTC)
	f, err := simulate.New(simulate.Config{Devices: 2, Rate: 0, Count: 1500, Step: time.Minute, Start: start})
	require.NoError(t, err)
	require.Equal(t, start, f.ReadingAt(0, 0, start).Time)
	require.Equal(t, start.Add(24*time.Hour), f.ReadingAt(1, 1440, start).Time)
	// The totalizer integrates the flow over the event time, not the pace.
	a, b := f.ReadingAt(0, 60, start), f.ReadingAt(0, 120, start)
	require.Greater(t, b.Totalizer-a.Totalizer, 0.0)

	_, err = simulate.New(simulate.Config{Devices: 1, Count: 1, Step: -time.Second})
	require.ErrorContains(t, err, "step must not be negative")
}
