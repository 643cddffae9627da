// Package txnsqlx runs txn transactions through sqlx
// (github.com/jmoiron/sqlx): fn receives the *sqlx.Tx, and Run re-runs fn in
// a fresh transaction when the database reports a lost race.
//
//	r := txnsqlx.New(db, txn.WithClassifier(txnpgx.Classify)) // build once, share
//	err := r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
//		_, err := tx.ExecContext(ctx, tx.Rebind("UPDATE accounts SET balance = balance - ? WHERE id = ?"), amount, from)
//		return err
//	})
//
// # Classification
//
// sqlx returns the database/sql driver's errors as they are, so the
// backends' classifiers apply unchanged: pass txnpgx.Classify (pgx's
// database/sql driver, github.com/jackc/pgx/v5/stdlib), txnmysql.Classify
// (github.com/go-sql-driver/mysql) or txnsqlite.Classify (modernc.org/sqlite)
// with txn.WithClassifier. This package imports no driver; New uses Classify,
// the driver-free fallback txnsql.ClassifyGeneric.
//
// # Nesting
//
// A Run nested in fn on the same Runner, and txn.Savepoint, run in an SQL
// savepoint of the same *sqlx.Tx (SAVEPOINT, RELEASE SAVEPOINT, ROLLBACK TO
// SAVEPOINT, which PostgreSQL, MySQL, MariaDB and SQLite accept): a
// permanent error inside rolls back to the savepoint, a retryable one is
// returned unchanged and restarts the whole transaction from the outermost
// Run.
package txnsqlx

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// Runner is the Runner type this package builds; fn receives the *sqlx.Tx.
type Runner = txn.Runner[*sqlx.Tx]

// New returns a Runner over db (the handle sqlx.Open or sqlx.NewDb returned). Its errors are classified by
// Classify, the driver-free fallback; give the classifier of the database
// behind db with txn.WithClassifier (txnpgx.Classify, txnmysql.Classify),
// and a lost connection is still recognised under it. A nil db yields a
// Runner whose Run returns txn.ErrNilRunner; an invalid option one whose Run
// returns an error matching txn.ErrBadOption.
func New(db *sqlx.DB, opts ...txn.RunnerOption) *Runner {
	if db == nil {
		return txn.New[*sqlx.Tx](nil, opts...)
	}
	return txn.New[*sqlx.Tx](&backend{db: db}, opts...)
}

// TxOptions returns a begin option that sets the isolation level and
// read-only flag of the transactions; give it to Runner.WithBegin.
func TxOptions(o sql.TxOptions) txn.BeginOption[*sqlx.Tx] {
	return txn.NewBeginOption[*sqlx.Tx]("txnsqlx", o)
}

// Classify is the classifier that needs no driver, txnsql.ClassifyGeneric:
// it returns txn.ClassConnLost for driver.ErrBadConn; txn.ClassRetryable
// for an error whose SQLState() method reports 40001 or 40P01 (pgx, lib/pq)
// and for one whose Code() int method reports SQLITE_BUSY or SQLITE_LOCKED
// (modernc.org/sqlite); and txn.ClassPermanent for everything else,
// including nil and typed nils. MySQL and MariaDB errors expose no such
// method: use txnmysql.Classify.
func Classify(err error) txn.Class {
	return txnsql.ClassifyGeneric(err)
}

// backend adapts a *sqlx.DB to txn.Backend and txn.Savepointer.
type backend struct {
	db *sqlx.DB
}

var (
	_ txn.Backend[*sqlx.Tx]     = (*backend)(nil)
	_ txn.Savepointer[*sqlx.Tx] = (*backend)(nil)
	_ txn.PoolSizer             = (*backend)(nil)
)

// Begin starts a transaction with BeginTxx, on a context that ctx cancels
// only while it begins (txnsql.BeginDetached): database/sql would
// otherwise roll the transaction back by itself when ctx ends. fn's
// statements take their context per call.
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*sqlx.Tx]) (*sqlx.Tx, error) {
	o, err := txnsql.ReadTxOptions("txnsqlx", opts)
	if err != nil {
		return nil, err
	}
	return txnsql.BeginDetached(ctx, "txnsqlx", func(ctx context.Context) (*sqlx.Tx, error) {
		return b.db.BeginTxx(ctx, o)
	}, (*sqlx.Tx).Rollback)
}

// Commit commits tx, bounded by ctx (txnsql.CommitOrRollbackWithin: past
// it the outcome is unknown; a ctx already ended sends no COMMIT and rolls
// back); a transaction fn already ended yields an error
// wrapping txn.ErrTxDone.
func (b *backend) Commit(ctx context.Context, tx *sqlx.Tx) error {
	return txnsql.CommitOrRollbackWithin(ctx, "txnsqlx", tx.Commit, tx.Rollback)
}

// Rollback rolls tx back, bounded by ctx (Run's RollbackTimeout).
func (b *backend) Rollback(ctx context.Context, tx *sqlx.Tx) error {
	return txnsql.RollbackWithin(ctx, "txnsqlx", tx.Rollback)
}

// PoolSize returns db's MaxOpenConnections (0 when unlimited), read when
// the Runner is built: the adaptive limit then starts at, and never
// exceeds, the pool.
func (b *backend) PoolSize() int { return b.db.Stats().MaxOpenConnections }

// Classify is the package's Classify; txn.WithClassifier replaces it.
func (b *backend) Classify(err error) txn.Class { return Classify(err) }

// ClassifyConn recognises a lost connection (driver.ErrBadConn), also
// under a classifier given with txn.WithClassifier.
func (b *backend) ClassifyConn(err error) txn.Class { return txnsql.Classify(err) }

// BeginSavepoint executes SAVEPOINT name and returns tx itself.
func (b *backend) BeginSavepoint(ctx context.Context, tx *sqlx.Tx, name string) (*sqlx.Tx, error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return nil, err
	}
	return tx, nil
}

// ReleaseSavepoint executes RELEASE SAVEPOINT name.
func (b *backend) ReleaseSavepoint(ctx context.Context, tx *sqlx.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name)
	return err
}

// RollbackToSavepoint executes ROLLBACK TO SAVEPOINT name.
func (b *backend) RollbackToSavepoint(ctx context.Context, tx *sqlx.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name)
	return err
}
