package compliance

import (
	"errors"
	"fmt"
)

// ErrInvalid marks a slot that must not be sent: its values cannot be
// formatted for the source (negative, NaN, a required variable missing,
// too long) or the body fails the source's JSON Schema. The error wrapping
// it carries the reason, naming the field. The slot is REJECTED locally
// with that reason and never reaches the regulator.
var ErrInvalid = errors.New("invalid for the regulator")

// invalidf returns an error wrapping ErrInvalid whose message is the
// reason: "<field>: <what is wrong>".
func invalidf(format string, args ...any) error {
	return &invalidError{reason: fmt.Sprintf(format, args...)}
}

type invalidError struct{ reason string }

func (e *invalidError) Error() string        { return e.reason }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// problems collects configuration problems, each naming its key.
type problems struct{ errs []error }

func (p *problems) add(err error) { p.errs = append(p.errs, err) }

func (p *problems) addf(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) err() error { return errors.Join(p.errs...) }
