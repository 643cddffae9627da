package txn

import (
	"context"
	"time"
)

// Backend adapts one database driver to the Runner. T is the transaction
// handle fn receives (pgx.Tx, *sql.Tx, a MongoDB session, ...). Backend
// packages implement it; users rarely need to.
type Backend[T any] interface {
	// Begin starts a transaction with the begin options the Runner was
	// given through WithBegin (none for a plain Runner). A backend that
	// does not recognise an option returns an error matching ErrBadOption.
	Begin(ctx context.Context, opts []BeginOption[T]) (T, error)
	// Commit commits tx, returning within ctx: when ctx ends first, with
	// an error that Classify reports as ClassConnLost (the outcome is
	// unknown). If tx was already finished it returns an error wrapping
	// ErrTxDone. After Commit returns, Run never calls Rollback on tx,
	// whatever the result.
	Commit(ctx context.Context, tx T) error
	// Rollback rolls tx back, returning within ctx. Run calls it with a
	// context detached from the caller's cancellation and bounded by
	// RollbackTimeout. If tx was already finished it returns an error
	// wrapping ErrTxDone: Run takes that as fn having committed or rolled
	// back tx itself (ErrFnFinishedTx), so a backend must not let anything
	// but an explicit commit or rollback finish tx (database/sql, for one,
	// rolls back by itself when the context given to BeginTx ends; txnsql
	// gives it a context the caller cancels only during BEGIN).
	Rollback(ctx context.Context, tx T) error
	// Classify maps an error from Begin, fn or Commit to a Class with the
	// backend's own table. WithClassifier replaces it.
	Classify(err error) Class
}

// ConnClassifier is implemented by backends that recognise a lost
// connection apart from their error table. When a Runner has its own
// classifier (WithClassifier), the errors that classifier leaves permanent
// are still checked with ClassifyConn, so that a custom classifier cannot
// turn a COMMIT cut off mid-flight into a definite failure.
type ConnClassifier interface {
	// ClassifyConn returns ClassConnLost (or ClassRetryable, when the
	// driver guarantees nothing was sent) for a connection failure and
	// ClassPermanent for every other error.
	ClassifyConn(err error) Class
}

// UnreachableClassifier is implemented by backends whose transaction
// reaches the server only with fn's first operation (a MongoDB transaction
// starts on the client, so its Begin cannot fail for want of a server).
// Unreachable reports whether an error fn returned means that no server
// could be reached at all (MongoDB: server selection failed, after the
// driver waited for a server as long as its serverSelectionTimeout allows).
// Run then does not try again: it returns an error matching ErrUnavailable
// that counts the try as one that could not reach the database
// (GiveUpError.Unreachable), so that a Run against a database that is down
// costs one server selection.
type UnreachableClassifier interface {
	Unreachable(err error) bool
}

// RunScoper is implemented by backends that keep state across all attempts
// of one outermost Run, such as a MongoDB session. StartRun is called once,
// before the first attempt; the context it returns replaces the caller's for
// Begin, fn, Commit and Rollback of every attempt, and end is called once
// when Run returns, whatever the outcome. An error from StartRun is returned
// as it is.
type RunScoper interface {
	StartRun(ctx context.Context) (scoped context.Context, end func(), err error)
}

// AttemptScoper is implemented by backends whose transaction also travels
// in the context fn receives, such as a MongoDB session, which the driver
// takes from the context of every operation. AttemptContext is called once
// per attempt, after Begin returned tx; the context it returns, derived
// from ctx, is the one fn receives (wrapped by the Runner). A backend that
// gives every attempt a handle of its own, and ends it when the attempt
// ends, makes a context fn kept from an earlier attempt refuse to reach
// the later attempt's transaction.
type AttemptScoper[T any] interface {
	AttemptContext(ctx context.Context, tx T) context.Context
}

// HandleBinder is implemented by backends whose transaction handle carries
// a context of its own, which the library reads back where fn cannot pass
// one (GORM's *gorm.DB, whose hooks and callbacks see
// tx.Statement.Context). BindHandle is called once per attempt, with the
// handle Begin returned, and once per nested Run or Savepoint, with the
// handle BeginSavepoint returned; ctx is the context fn receives, which
// carries that transaction or savepoint, and the handle BindHandle returns
// is the one fn receives (and TxFrom returns). So a hook that calls
// OnCommit on the handle's context registers its callback at the level of
// its statement: with a savepoint that is rolled back, the callback is
// dropped too. The Runner may pass either handle back to the backend's
// Commit, Rollback and savepoint methods.
type HandleBinder[T any] interface {
	BindHandle(ctx context.Context, tx T) T
}

// BeginOption is a transaction option (isolation level, read-only, read
// concern, ...) for Runners whose transaction handle is T. Backend packages
// build them (txnpgx.TxOptions, txnsqlite.Deferred, ...); give them to
// Runner.WithBegin. Because the type carries T, an option of a pgx backend
// cannot be given to a Runner over *sql.Tx: the compiler refuses it.
type BeginOption[T any] struct {
	backend string
	value   any
}

// NewBeginOption returns a begin option for backend (the name of the
// backend package that reads it, such as "txnpgx") carrying value, which
// only that backend interprets. Backend packages call it; users call the
// backends' constructors instead.
func NewBeginOption[T any](backend string, value any) BeginOption[T] {
	return BeginOption[T]{backend: backend, value: value}
}

// Backend returns the name of the backend package the option is meant for.
func (o BeginOption[T]) Backend() string { return o.backend }

// Value returns the backend-specific setting the option carries.
func (o BeginOption[T]) Value() any { return o.value }

// PoolSizer is implemented by backends whose transactions each take a
// connection from a pool of bounded size (txnpgx over a *pgxpool.Pool or a
// *pgx.Conn, txnsql and the backends built on it over a *sql.DB with
// SetMaxOpenConns). New reads it once: the adaptive limit's ceiling, and so
// its starting point, is then the pool's size, so that attempts over it wait
// in the Runner's FIFO queue, where the controller sees them, instead of
// inside the pool, where a wait for a connection would look like a slow,
// contended attempt.
type PoolSizer interface {
	// PoolSize returns the most connections the pool holds at once, or 0
	// when it sets no bound.
	PoolSize() int
}

// KeyLocker is implemented by backends that can hold conflict keys in the
// database itself, so that the keys serialize transactions across every
// process that uses the database (txnpgx with transaction-level advisory
// locks, txnmysql with named locks). A Runner built with DatabaseKeys uses
// it for every call that names Keys.
type KeyLocker[T any] interface {
	// BeginLocked begins a transaction as Begin does, then takes keys
	// (sorted, without duplicates, at least one) in the database, in that
	// order, waiting while another transaction holds one of them. It
	// returns the transaction and unlock, which the Runner calls once after
	// the transaction committed or rolled back, with a context detached
	// from the caller's cancellation and bounded by RollbackTimeout (unlock
	// is nil when ending the transaction releases the keys). On error it
	// has ended the transaction and released what it took, and returns the
	// error that stopped it (ctx's, or the database's).
	BeginLocked(ctx context.Context, opts []BeginOption[T], keys []string) (tx T, unlock func(ctx context.Context), err error)
}

// LockWaitBounder is implemented by backends whose database finds a
// deadlock only after a wait (PostgreSQL, after deadlock_timeout: 1 s by
// default) and that can begin a transaction whose lock waits are bounded
// (txnpgx, with a transaction-local lock_timeout). The adaptive limit uses
// it for its probes: an attempt admitted beside others while the
// controller is contended (from a cut of the limit until contention
// faded), whose risk is to deadlock with the attempts it runs beside. Such
// an attempt begins with BeginBoundedWait, and when it fails with an error
// the Runner classifies as permanent (with WithClassifier's classifier, or
// else the backend's table) and LockWaitExpired
// recognises (in fn, or in a savepoint or nested Run of it), the Runner
// takes the failure for a conflict that lost the transaction and runs fn
// again, as it would after the deadlock, without first waiting for one.
// Attempts that are no probe begin with Begin, as do a Run's last attempt
// (MaxAttempts) and every attempt of a Run after one that lost to the
// bound: the bound costs a Run one attempt at most. An attempt that holds conflict keys in the database
// (DatabaseKeys) is never bounded: its keys already serialize it.
type LockWaitBounder[T any] interface {
	// BeginBoundedWait begins a transaction as Begin does, in which no
	// statement waits longer than wait for a lock.
	BeginBoundedWait(ctx context.Context, opts []BeginOption[T], wait time.Duration) (T, error)
	// LockWaitExpired reports whether err says that a statement of such a
	// transaction gave up waiting for a lock because the bound expired
	// (not, for one, a NOWAIT that found the row locked).
	LockWaitExpired(err error) bool
}
