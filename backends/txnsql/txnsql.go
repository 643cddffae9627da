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
	"errors"
	"fmt"
	"slices"
	"strings"

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
}

// NewRunner returns a Runner over db for driver d, configured by opts. A
// nil db yields a Runner whose Run returns txn.ErrNilRunner.
func NewRunner(db *sql.DB, d Driver, opts ...txn.RunnerOption) *Runner {
	if db == nil {
		return txn.New[*sql.Tx](nil, opts...)
	}
	return txn.New[*sql.Tx](&backend{db: db, d: d}, opts...)
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

// Begin starts a transaction with the sql.TxOptions of the last option in
// opts (txnsql's own, or d's).
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*sql.Tx]) (*sql.Tx, error) {
	o, err := ReadTxOptions(b.d.Name, opts, genericName)
	if err != nil {
		return nil, err
	}
	// database/sql rolls a transaction back by itself when the context
	// given to BeginTx ends, after which Commit and Rollback report
	// sql.ErrTxDone just as they do when fn ended the transaction. Run
	// always ends the transaction itself, and must know when fn did, so
	// the transaction gets a context that ctx cancels only while it
	// begins (the wait for a connection and BEGIN stay bounded by ctx).
	// Statements in fn are still bounded by the context they are given.
	if ctx.Done() == nil {
		// ctx never ends: database/sql will not end the transaction.
		return b.db.BeginTx(ctx, o)
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	tx, err := b.db.BeginTx(bctx, o)
	if !stop() {
		// ctx ended while the transaction began: database/sql rolls
		// back what began.
		if err == nil {
			_ = tx.Rollback()
		}
		return nil, fmt.Errorf("%s: begin: %w", b.d.Name, context.Cause(ctx))
	}
	return tx, err
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

// Commit commits tx, bounded by ctx. database/sql's Commit takes no
// context, so it runs on its own goroutine: when ctx ends first, Commit
// returns an error that Classify reports as txn.ClassConnLost (the outcome
// is unknown) and leaves the commit to finish, or fail, with its
// connection. A transaction that fn already ended yields an error wrapping
// txn.ErrTxDone.
func (b *backend) Commit(ctx context.Context, tx *sql.Tx) error {
	if ctx.Done() == nil {
		return doneErr(tx.Commit())
	}
	ok, err := bounded(ctx, tx.Commit)
	if !ok {
		return &commitUnansweredError{backend: b.d.Name, err: context.Cause(ctx)}
	}
	return doneErr(err)
}

// Rollback rolls tx back, bounded by ctx (Run's RollbackTimeout) the same
// way as Commit: past it Rollback returns the context's error and leaves
// the rollback to finish with its connection.
func (b *backend) Rollback(ctx context.Context, tx *sql.Tx) error {
	if ctx.Done() == nil {
		return doneErr(tx.Rollback())
	}
	ok, err := bounded(ctx, tx.Rollback)
	if !ok {
		return fmt.Errorf("%s: rollback not answered in time, left to its connection: %w", b.d.Name, context.Cause(ctx))
	}
	return doneErr(err)
}

// bounded runs end (a Commit or Rollback) on a goroutine and returns true
// and its error, or false if ctx ended first.
func bounded(ctx context.Context, end func() error) (answered bool, err error) {
	done := make(chan error, 1)
	go func() { done <- end() }()
	select {
	case err := <-done:
		return true, err
	case <-ctx.Done():
		select {
		case err := <-done:
			// Both happened: the answer is known.
			return true, err
		default:
			return false, nil
		}
	}
}

// commitUnansweredError is a COMMIT that had not been answered when the
// context ended: it may or may not take effect.
type commitUnansweredError struct {
	backend string
	err     error
}

func (e *commitUnansweredError) Error() string {
	return e.backend + ": commit not answered before the context ended, outcome unknown: " + e.err.Error()
}

func (e *commitUnansweredError) Unwrap() error { return e.err }

func doneErr(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return err
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
