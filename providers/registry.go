package providers

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Registry maps provider names to decoders. Build one in main, register the
// built-in providers and the user's specs, and hand it to the stages that
// decode; there is no global registry. A Registry is safe for concurrent
// use.
type Registry struct {
	mu       sync.RWMutex
	decoders map[string]Decoder
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{decoders: map[string]Decoder{}}
}

// Register adds d under name. An empty name, a nil decoder or a name already
// registered is an error.
func (r *Registry) Register(name string, d Decoder) error {
	if name == "" {
		return errors.New("registering provider: empty name")
	}
	if d == nil {
		return fmt.Errorf("registering provider %q: nil decoder", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.decoders[name]; dup {
		return fmt.Errorf("registering provider %q: already registered", name)
	}
	r.decoders[name] = d
	return nil
}

// Lookup returns the decoder registered under name, or an error wrapping
// ErrUnknownProvider.
func (r *Registry) Lookup(name string) (Decoder, error) {
	r.mu.RLock()
	d, ok := r.decoders[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProvider, name)
	}
	return d, nil
}

// Names returns the registered provider names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	out := make([]string, 0, len(r.decoders))
	for name := range r.decoders {
		out = append(out, name)
	}
	r.mu.RUnlock()
	slices.Sort(out)
	return out
}
