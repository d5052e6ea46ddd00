package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stackvps/stackvps/audit"
	"github.com/stackvps/stackvps/points"
)

// Errors returned by the store, wrapped with what was concerned; test them
// with errors.Is.
var (
	// ErrNotFound: the entity does not exist, or the principal may not know
	// that it exists (a point they cannot read, another user's token).
	ErrNotFound = errors.New("not found")
	// ErrForbidden: the principal can see the entity but lacks the
	// permission for the action. Never returned for what they cannot see.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthenticated: no valid principal (a bad, revoked or expired
	// token, an inactive user, the zero Principal).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrConflict: the change clashes with the current state (the email or
	// code is taken, the grant exists, it would leave no administrator).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a malformed argument (email, permission, relation, ...).
	ErrInvalid = errors.New("invalid")
)

// DefaultTouchInterval is how often Authenticate writes a token's
// last_used_at at most.
const DefaultTouchInterval = time.Minute

// Store manages accounts, grants and point changes. It is safe for
// concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	points *points.Store
	now    func() time.Time
	rand   io.Reader
	touch  time.Duration
}

// An Option changes a Store's default.
type Option func(*Store)

// WithClock sets the clock used for token expiry, revocation and
// last_used_at. Default time.Now.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithRandom sets the source of token bytes. Default crypto/rand.Reader;
// anything else is for tests.
func WithRandom(r io.Reader) Option { return func(s *Store) { s.rand = r } }

// WithTouchInterval sets how often Authenticate updates a token's
// last_used_at at most. Default DefaultTouchInterval.
func WithTouchInterval(d time.Duration) Option { return func(s *Store) { s.touch = d } }

// New returns a store on pool, which must be migrated.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, points: points.NewStore(pool), now: time.Now, rand: rand.Reader, touch: DefaultTouchInterval}
	for _, o := range opts {
		o(s)
	}
	return s
}

// querier is what reads run on: the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// change runs fn in a transaction after checking the actor, and records the
// audit entry fn returns in the same transaction. fn returns a nil entry
// when nothing changed (nothing is recorded then).
func (s *Store) change(ctx context.Context, actor Principal, fn func(tx pgx.Tx) (*audit.Entry, error)) error {
	if err := actor.check(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, err := fn(tx)
		if err != nil || e == nil {
			return err
		}
		e.ActorUserID, e.Actor = actor.userID, actor.actor
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
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)
