package pipeline

import "errors"

// ErrTransient marks an error worth retrying: a dependency is down or busy.
// The runtime retries the record with backoff, never dead-letters it, and the
// stage goes on once the dependency is back. Test with errors.Is.
var ErrTransient = errors.New("transient")

// Transient marks err as transient. It returns nil for nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, transient: true}
}

// Permanent marks err as permanent with a low-cardinality reason for metrics
// ("bad_payload", "unknown_device"). Every error not marked transient is
// permanent anyway; the reason is what this adds. It returns nil for nil.
func Permanent(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, reason: reason}
}

// IsTransient reports whether err was marked with Transient.
func IsTransient(err error) bool { return errors.Is(err, ErrTransient) }

// Reason returns the reason given to Permanent, or "unclassified".
func Reason(err error) string {
	var c *classified
	for e := err; errors.As(e, &c); e = c.err {
		if c.reason != "" {
			return c.reason
		}
	}
	return "unclassified"
}

type classified struct {
	err       error
	transient bool
	reason    string
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

func (c *classified) Is(target error) bool { return c.transient && target == ErrTransient }
