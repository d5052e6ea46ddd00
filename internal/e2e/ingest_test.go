package e2e_test

import (
	"testing"
	"time"

	"github.com/stackvps/stackvps/internal/testenv"
	"github.com/stackvps/stackvps/simulate"
)

// 50 devices in the three formats publish 200 readings each over MQTT: every
// reading becomes exactly one row per variable (10,000 flow, 10,000
// totalizer, 10,000 level rows), in canonical units.
func TestIngestEndToEndIntegration(t *testing.T) {
	const devices, readings = 50, 200
	d := newDeployment(t, simulate.Config{Devices: devices, Rate: 0, Count: readings})
	ctx := testenv.Context(t, 5*time.Minute)
	d.run("bridge,normalize,sink")
	d.publish(ctx, 0, readings)
	d.waitRows(ctx, devices*readings*3, 2*time.Minute)
	d.verify(ctx, readings)
}

// Each stage runs as its own process and is killed with SIGKILL in turn
// while the fleet publishes; after restarts the table holds every reading
// exactly once.
func TestKillEachStageIntegration(t *testing.T) {
	const devices, batches, per = 20, 6, 25
	d := newDeployment(t, simulate.Config{Devices: devices, Rate: 0, Count: batches * per})
	ctx := testenv.Context(t, 5*time.Minute)
	procs := map[string]*process{}
	for _, s := range []string{"bridge", "normalize", "sink"} {
		procs[s] = d.run(s)
	}
	victims := []string{"sink", "normalize", "bridge", "sink", "normalize", "bridge"}
	for b := range batches {
		done := make(chan struct{})
		go func() { defer close(done); d.publish(ctx, b*per, per) }()
		// Kill a stage while its input is flowing, then bring it back.
		time.Sleep(150 * time.Millisecond)
		v := victims[b]
		procs[v].kill(t)
		<-done
		procs[v] = d.run(v)
	}
	d.waitRows(ctx, devices*batches*per*3, 2*time.Minute)
	d.verify(ctx, batches*per)
	for _, p := range procs {
		p.stop(t)
	}
}
