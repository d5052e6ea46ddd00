package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/compliance"
)

// Errors returned by the store, wrapped with what was concerned; test them
// with errors.Is.
var (
	// ErrNotFound: the config, submission or source does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change clashes with the current state (an
	// overlapping config, a resubmission of a slot that is not final).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a malformed argument (params, dates, unknown point or
	// source); the message names the field.
	ErrInvalid = errors.New("invalid")
	// ErrStale: the slot is no longer in the state the submitter read it
	// in (another replica or a user moved it); skip it.
	ErrStale = errors.New("slot changed meanwhile")
	// ErrAlreadyConfirmed: an attempt of the slot's current round already
	// returned confirmed; the slot was set CONFIRMED and must never be sent
	// again.
	ErrAlreadyConfirmed = errors.New("slot already confirmed")
)

// An Actor is who makes a change, for the audit log. accounts.Principal
// satisfies it; UserID is 0 for the system or the command line.
type Actor interface {
	UserID() int64
	Actor() string
}

// SystemActor is an Actor for changes made by the system itself, named
// e.g. "system:scheduler".
type SystemActor string

// UserID returns 0: the system has no user id.
func (SystemActor) UserID() int64 { return 0 }

// Actor returns the name.
func (a SystemActor) Actor() string { return string(a) }

// Store is the compliance database layer: sources, configs, slots
// (compliance_submissions) and attempts. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	sealer *compliance.Sealer
}

// New returns a store on pool, which must be migrated. sealer seals and
// opens the configs' credentials; nil refuses every config with
// credentials (compliance.credentials_key unset) and opens none. The
// submitter's methods take the time as an argument; the store reads no
// clock of its own.
func New(pool *pgxpool.Pool, sealer *compliance.Sealer) *Store {
	return &Store{pool: pool, sealer: sealer}
}

// Pool returns the store's pool (the submitter takes its leader locks on
// dedicated connections of it).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// querier is what reads run on: the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// change runs fn in a transaction and records the audit entry it returns
// (nil: nothing changed) in the same transaction.
func (s *Store) change(ctx context.Context, actor Actor, fn func(tx pgx.Tx) (*audit.Entry, error)) error {
	if actor == nil || actor.Actor() == "" {
		return fmt.Errorf("%w: no actor for the audit log", ErrInvalid)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, err := fn(tx)
		if err != nil || e == nil {
			return err
		}
		e.ActorUserID, e.Actor = actor.UserID(), actor.Actor()
		return audit.Record(ctx, tx, *e)
	})
}

// pgCode returns err's SQLSTATE, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

const (
	codeForeignKeyViolation = "23503"
	codeCheckViolation      = "23514"
)

// micros converts a duration to microseconds for an interval parameter
// ($n::bigint * interval '1 microsecond').
func micros(d time.Duration) int64 { return d.Microseconds() }

// fromMicros is the inverse of micros.
func fromMicros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
