package normalize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackvps/stackvps/points"
)

// ErrUnknownDevice is returned for a device the devices table does not have
// (or has inactive).
var ErrUnknownDevice = errors.New("unknown device")

// DeviceSource is where the directory loads devices from (points.Store).
type DeviceSource interface {
	Devices(ctx context.Context) ([]points.Device, error)
	WatchDevices(ctx context.Context, onChange func()) error
}

// Directory is the in-memory device -> point map, reloaded every refresh
// interval and whenever the devices table changes. A lookup that misses
// reloads once (a device registered a moment ago is found), so a device is
// called unknown only against a map fresher than minStale. Safe for
// concurrent use.
type Directory struct {
	src      DeviceSource
	refresh  time.Duration
	log      *slog.Logger
	devices  atomic.Pointer[map[string]points.Device]
	loadedAt atomic.Int64 // unix nanos of the last successful load
	mu       sync.Mutex   // serializes loads
	changed  chan struct{}
	minStale time.Duration
}

// NewDirectory returns a directory over src; Run keeps it fresh.
func NewDirectory(src DeviceSource, refresh time.Duration, log *slog.Logger) *Directory {
	return &Directory{src: src, refresh: refresh, log: log, changed: make(chan struct{}, 1), minStale: time.Second}
}

// Run loads the map, then reloads it on every change notification and every
// refresh interval, until ctx is done. Load failures are logged and retried;
// lookups keep using the last map.
func (d *Directory) Run(ctx context.Context) error {
	go func() {
		_ = d.src.WatchDevices(ctx, func() {
			select {
			case d.changed <- struct{}{}:
			default:
			}
		})
	}()
	t := time.NewTicker(d.refresh)
	defer t.Stop()
	for {
		if err := d.load(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("loading devices failed; keeping the last map", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.changed:
		}
	}
}

func (d *Directory) load(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ds, err := d.src.Devices(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]points.Device, len(ds))
	for _, dev := range ds {
		if dev.Active {
			m[dev.ID] = dev
		}
	}
	d.devices.Store(&m)
	d.loadedAt.Store(time.Now().UnixNano())
	return nil
}

// Ready reports whether the map was loaded at least once.
func (d *Directory) Ready(context.Context) error {
	if d.devices.Load() == nil {
		return errors.New("devices not loaded yet")
	}
	return nil
}

// Lookup returns the device. It returns ErrUnknownDevice when the device is
// not in a fresh map, and another error (transient: retry later) when the map
// cannot be loaded.
func (d *Directory) Lookup(ctx context.Context, id string) (points.Device, error) {
	if m := d.devices.Load(); m != nil {
		if dev, ok := (*m)[id]; ok {
			return dev, nil
		}
	}
	if time.Since(time.Unix(0, d.loadedAt.Load())) > d.minStale {
		if err := d.load(ctx); err != nil {
			return points.Device{}, fmt.Errorf("loading devices: %w", err)
		}
		if dev, ok := (*d.devices.Load())[id]; ok {
			return dev, nil
		}
	}
	if d.devices.Load() == nil {
		return points.Device{}, errors.New("devices not loaded yet")
	}
	return points.Device{}, fmt.Errorf("%w %q (register it in the devices table)", ErrUnknownDevice, id)
}
