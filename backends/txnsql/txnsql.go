// Package txnsql runs txn transactions over database/sql, for any driver,
// and is the base of the database/sql backends txnmysql and txnsqlite.
//
// New builds a Runner for any driver: it recognises only a lost connection
// (driver.ErrBadConn); give it the driver's classifier with
// txn.WithClassifier (txnpgx.Classify, txnmysql.Classify,
// txnsqlite.Classify, or your own). What that classifier leaves permanent is
// still checked for driver.ErrBadConn. Savepoints use the standard
// SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT statements, which
// PostgreSQL, MySQL, MariaDB and SQLite all accept.
//
// A backend package for one driver describes itself with a Driver (its
// name, error table and lost-connection test) and builds its Runners with
// NewRunner and its begin options with Driver.TxOptions.
package txnsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// Runner is the Runner type this package builds.
type Runner = txn.Runner[*sql.Tx]

// genericName is the Driver name of New, whose begin options every
// database/sql Runner accepts.
const genericName = "txnsql"

// New returns a Runner over db that recognises only a lost connection
// (driver.ErrBadConn, see Classify); add the driver's table with
// txn.WithClassifier. A nil db yields a Runner whose Run returns
// txn.ErrNilRunner.
func New(db *sql.DB, opts ...txn.RunnerOption) *Runner {
	return NewRunner(db, Driver{Name: genericName}, opts...)
}

// TxOptions returns a begin option that sets the isolation level and
// read-only flag of the transactions; give it to Runner.WithBegin. Every
// Runner over *sql.Tx accepts it, whichever backend built it.
func TxOptions(o sql.TxOptions) txn.BeginOption[*sql.Tx] {
	return Driver{Name: genericName}.TxOptions(o)
}

// Classify returns txn.ClassConnLost for driver.ErrBadConn and for a
// COMMIT this package stopped waiting for because the context ended, and
// txn.ClassPermanent for everything else. database/sql's contract says a
// driver returns ErrBadConn only when the server cannot have acted, but not
// every driver keeps it, so at COMMIT it is treated as ambiguous. It looks
// through wrapping and never panics: typed nils in err's chain are skipped.
func Classify(err error) txn.Class {
	if _, ok := errchain.As[*commitUnansweredError](err); ok || errchain.Is(err, driver.ErrBadConn) {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}

// Driver describes a backend built on this package for one database/sql
// driver.
type Driver struct {
	// Name is the backend package's name ("txnmysql"); it names the
	// backend in errors and marks the begin options it accepts.
	Name string
	// Classify is the driver's error table (nil: none). What it leaves
	// permanent is checked with ClassifyConn.
	Classify txn.Classifier
	// ClassifyConn recognises the driver's lost-connection errors (nil:
	// only driver.ErrBadConn). It also completes a classifier given with
	// txn.WithClassifier. driver.ErrBadConn is recognised in any case.
	ClassifyConn txn.Classifier
	// LockKeys, when not nil, lets Runners built with txn.DatabaseKeys
	// hold conflict keys in the database: it is called on a connection
	// reserved for the attempt, before BEGIN (so that the transaction's
	// snapshot is taken once the keys are held), with the keys (sorted,
	// without duplicates), and takes them, waiting while another session
	// holds one; it returns the database's error, or ctx's. The
	// transaction then begins on that connection, and UnlockKeys receives
	// it after the transaction ended.
	LockKeys func(ctx context.Context, conn *sql.Conn, keys []string) error
	// UnlockKeys releases, on the attempt's connection, the keys LockKeys
	// took (it is also called after LockKeys failed). If it fails the
	// connection is discarded rather than returned to the pool, so that no
	// key outlives the attempt. Needed when LockKeys is set and the locks
	// outlive the transaction (MySQL's named locks); nil otherwise.
	UnlockKeys func(ctx context.Context, conn *sql.Conn) error
	// BoundBegin makes Run stop waiting for BEGIN when its context ends,
	// for a driver whose BEGIN can outlast the context it was given
	// (modernc.org/sqlite: BEGIN IMMEDIATE waits in SQLite's busy handler
	// for up to busy_timeout, and no interrupt ends that wait). BEGIN
	// then runs on a goroutine of its own; a transaction that begins
	// after the context ended is rolled back there.
	BoundBegin bool
	// BeginWait, with BoundBegin, is the longest such a BEGIN waits on
	// its own (SQLite's busy_timeout), or negative when it is not known.
	// When it is known, BEGIN runs on a goroutine of its own only if the
	// context's deadline comes sooner than BeginWait: a BEGIN that cannot
	// outlast the deadline, or a context without one (cancelled at most
	// BeginWait early), costs no goroutine, which on SQLite, where a BEGIN
	// takes microseconds, shows in the tail latency under contention.
	BeginWait time.Duration
}

// NewRunner returns a Runner over db for driver d, configured by opts. A
// nil db yields a Runner whose Run returns txn.ErrNilRunner.
func NewRunner(db *sql.DB, d Driver, opts ...txn.RunnerOption) *Runner {
	if db == nil {
		return txn.New[*sql.Tx](nil, opts...)
	}
	b := &backend{db: db, d: d}
	if d.LockKeys != nil {
		return txn.New[*sql.Tx](&lockingBackend{b}, opts...)
	}
	return txn.New[*sql.Tx](b, opts...)
}

// TxOptions returns a begin option carrying o for Runners of d. A Runner of
// another database/sql backend refuses it at Begin with an error matching
// txn.ErrBadOption that names both backends.
func (d Driver) TxOptions(o sql.TxOptions) txn.BeginOption[*sql.Tx] {
	return txn.NewBeginOption[*sql.Tx](d.Name, o)
}

// backend adapts a *sql.DB to txn.Backend, txn.ConnClassifier and
// txn.Savepointer.
type backend struct {
	db *sql.DB
	d  Driver
}

var (
	_ txn.Backend[*sql.Tx]     = (*backend)(nil)
	_ txn.ConnClassifier       = (*backend)(nil)
	_ txn.Savepointer[*sql.Tx] = (*backend)(nil)
)

// PoolSize returns db's MaxOpenConnections (0 when unlimited), read when
// the Runner is built.
func (b *backend) PoolSize() int { return b.db.Stats().MaxOpenConnections }

// Begin starts a transaction with the sql.TxOptions of the last option in
// opts (txnsql's own, or d's).
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*sql.Tx]) (*sql.Tx, error) {
	o, err := ReadTxOptions(b.d.Name, opts, genericName)
	if err != nil {
		return nil, err
	}
	return b.beginOn(ctx, b.db.BeginTx, o)
}

// beginOn begins a transaction with begin (the pool's BeginTx, or a
// reserved connection's). The transaction outlives ctx (see BeginDetached):
// database/sql would otherwise roll it back by itself when ctx ends.
func (b *backend) beginOn(ctx context.Context, begin func(context.Context, *sql.TxOptions) (*sql.Tx, error), o *sql.TxOptions) (*sql.Tx, error) {
	bound := b.d.BoundBegin && b.d.mayOutlast(ctx) // ctx's deadline: BeginDetached's context has none
	return BeginDetached(ctx, b.d.Name, func(ctx context.Context) (*sql.Tx, error) {
		if bound {
			return beginBounded(ctx, b.d.Name, func() (*sql.Tx, error) { return begin(ctx, o) })
		}
		return begin(ctx, o)
	}, (*sql.Tx).Rollback)
}

// mayOutlast reports whether a BEGIN that waits on its own for up to
// d.BeginWait may outlast ctx's deadline (always, when BeginWait is not
// known).
func (d *Driver) mayOutlast(ctx context.Context) bool {
	if d.BeginWait < 0 {
		return true
	}
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < d.BeginWait
}

// beginBounded runs begin on its own goroutine and returns its result, or
// an error wrapping ctx's cause as soon as ctx ends: a goroutine then
// rolls back the transaction if begin returns one later.
func beginBounded(ctx context.Context, name string, begin func() (*sql.Tx, error)) (*sql.Tx, error) {
	if ctx.Done() == nil {
		return begin()
	}
	type result struct {
		tx  *sql.Tx
		err error
	}
	done := make(chan result, 1)
	go func() {
		tx, err := begin()
		done <- result{tx, err}
	}()
	select {
	case r := <-done:
		return r.tx, r.err
	case <-ctx.Done():
		select {
		case r := <-done:
			// Both happened: the answer is known.
			return r.tx, r.err
		default:
		}
		// Whatever begins late is rolled back once it has.
		go func() {
			if r := <-done; r.err == nil {
				_ = r.tx.Rollback()
			}
		}()
		return nil, fmt.Errorf("%s: begin not answered before the context ended, left to its connection: %w", name, context.Cause(ctx))
	}
}

// lockingBackend is a backend whose Driver can hold conflict keys in the
// database.
type lockingBackend struct{ *backend }

var _ txn.KeyLocker[*sql.Tx] = lockingBackend{}

// BeginLocked reserves a connection, takes keys on it with the Driver's
// LockKeys, and begins a transaction on it. unlock releases them with
// UnlockKeys (discarding the connection if that fails) and returns the
// connection to the pool. On error everything taken is released.
func (b lockingBackend) BeginLocked(ctx context.Context, opts []txn.BeginOption[*sql.Tx], keys []string) (*sql.Tx, func(context.Context), error) {
	o, err := ReadTxOptions(b.d.Name, opts, genericName)
	if err != nil {
		return nil, nil, err
	}
	conn, err := b.db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	release := func(ctx context.Context) {
		if b.d.UnlockKeys != nil {
			if err := b.d.UnlockKeys(ctx, conn); err != nil {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}
		_ = conn.Close()
	}
	unlock := func(ctx context.Context) {
		// A COMMIT or ROLLBACK that CommitWithin or RollbackWithin
		// stopped waiting for still holds the connection, and every use
		// of it (UnlockKeys, Raw, Close) waits for that call to return,
		// whatever its context: over a silent link, forever. So the
		// release runs on its own goroutine, bounded by ctx like the
		// commit and the rollback. Past ctx it is left to finish with the
		// connection: UnlockKeys then fails on its ended context and the
		// connection is discarded, which releases the keys with the
		// session.
		if ctx.Done() == nil {
			release(ctx)
			return
		}
		_, _ = bounded(ctx, func() error { release(ctx); return nil })
	}
	fail := func(err error) (*sql.Tx, func(context.Context), error) {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
		defer cancel()
		unlock(uctx)
		return nil, nil, err
	}
	if err := b.d.LockKeys(ctx, conn, keys); err != nil {
		return fail(fmt.Errorf("%s: conflict key lock: %w", b.d.Name, err))
	}
	tx, err := b.beginOn(ctx, conn.BeginTx, o)
	if err != nil {
		return fail(err)
	}
	return tx, unlock, nil
}

// ReadTxOptions returns the sql.TxOptions carried by the last of opts, the
// begin options given to a Runner of the package named runner (nil when
// opts is empty). Packages that run transactions over database/sql under
// another handle type (txngorm, txnsqlx, txnbun, txnent) share it. An option
// built by a package other than runner or one of also, or one that carries
// something else than a sql.TxOptions, yields an error matching
// txn.ErrBadOption that names both packages.
func ReadTxOptions[T any](runner string, opts []txn.BeginOption[T], also ...string) (*sql.TxOptions, error) {
	var o *sql.TxOptions
	for _, opt := range opts {
		if opt.Backend() != runner && !slices.Contains(also, opt.Backend()) {
			hint := ""
			if len(also) > 0 {
				hint = " (or " + strings.Join(also, ", ") + ".TxOptions)"
			}
			return nil, fmt.Errorf("%w: a begin option built by %s was given to a %s Runner; use %s's begin options%s",
				txn.ErrBadOption, opt.Backend(), runner, runner, hint)
		}
		v, ok := opt.Value().(sql.TxOptions)
		if !ok {
			return nil, fmt.Errorf("%w: %s begin option carries %T, not sql.TxOptions", txn.ErrBadOption, opt.Backend(), opt.Value())
		}
		o = &v
	}
	return o, nil
}

// Commit commits tx, bounded by ctx (see CommitWithin): past it the
// outcome is unknown. If ctx has already ended, no COMMIT is sent: tx is
// rolled back (see CommitOrRollbackWithin). A transaction that fn already
// ended yields an error wrapping txn.ErrTxDone.
func (b *backend) Commit(ctx context.Context, tx *sql.Tx) error {
	return CommitOrRollbackWithin(ctx, b.d.Name, tx.Commit, tx.Rollback)
}

// Rollback rolls tx back, bounded by ctx (Run's RollbackTimeout; see
// RollbackWithin).
func (b *backend) Rollback(ctx context.Context, tx *sql.Tx) error {
	return RollbackWithin(ctx, b.d.Name, tx.Rollback)
}

// Classify applies the driver's table, then ClassifyConn.
func (b *backend) Classify(err error) txn.Class {
	if b.d.Classify != nil {
		if c := b.d.Classify(err); c != txn.ClassPermanent {
			return c
		}
	}
	return b.ClassifyConn(err)
}

// ClassifyConn applies the driver's lost-connection test, then Classify.
func (b *backend) ClassifyConn(err error) txn.Class {
	if b.d.ClassifyConn != nil {
		if c := b.d.ClassifyConn(err); c != txn.ClassPermanent {
			return c
		}
	}
	return Classify(err)
}

// BeginSavepoint executes SAVEPOINT name.
func (b *backend) BeginSavepoint(ctx context.Context, tx *sql.Tx, name string) (*sql.Tx, error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return nil, err
	}
	return tx, nil
}

// ReleaseSavepoint executes RELEASE SAVEPOINT name.
func (b *backend) ReleaseSavepoint(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name)
	return err
}

// RollbackToSavepoint executes ROLLBACK TO SAVEPOINT name.
func (b *backend) RollbackToSavepoint(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name)
	return err
}
