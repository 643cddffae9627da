// Package txnbun runs txn transactions through bun (github.com/uptrace/bun):
// fn receives the bun.Tx of the attempt, and the Runner retries fn in a fresh
// transaction when the database reports a lost race.
//
//	r := txnbun.New(db, txn.WithClassifier(txnpgx.Classify)) // db is a *bun.DB; build once, share
//	err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
//		_, err := tx.NewUpdate().Model(&acct).WherePK().Exec(ctx)
//		return err
//	})
//
// Errors are classified by the classifier given with txn.WithClassifier, taken
// from the backend package of the driver under the *bun.DB: txnpgx.Classify for
// pgdialect over pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib),
// txnmysql.Classify for mysqldialect over github.com/go-sql-driver/mysql,
// txnsqlite.Classify for sqlitedialect over modernc.org/sqlite. This package
// imports none of them, so a bun user downloads only the driver they already
// use. bun's own pgdriver reports server errors as pgdriver.Error values,
// which txnpgx.Classify does not read: the README shows the five lines that
// hand their SQLSTATE to it. Whatever the classifier leaves permanent is
// still checked for a lost connection, never mistaken for a definite failure.
// Without one, Classify (txnsql.ClassifyGeneric) applies.
//
// A Run nested in fn on the same Runner, and txn.Savepoint, run in a
// savepoint of the transaction (SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE
// SAVEPOINT; SAVE TRANSACTION on SQL Server), issued through the bun.Tx so
// that bun's query hooks see them. The nested fn receives the same bun.Tx.
package txnbun

import (
	"context"
	"database/sql"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/feature"
)

// Runner is the Runner type this package builds: fn receives a bun.Tx.
type Runner = txn.Runner[bun.Tx]

// New returns a Runner over the bun.DB the application opened. Its errors are classified by
// Classify, which knows no driver: give the classifier of the backend
// package matching the database/sql driver with txn.WithClassifier
// (txnpgx.Classify, txnmysql.Classify, txnsqlite.Classify); a lost
// connection is still recognised under it. A nil db yields a Runner whose
// Run returns txn.ErrNilRunner; an invalid option one whose Run returns an
// error matching txn.ErrBadOption.
func New(db *bun.DB, opts ...txn.RunnerOption) *Runner {
	if db == nil {
		return txn.New[bun.Tx](nil, opts...)
	}
	return txn.New[bun.Tx](&backend{db: db}, opts...)
}

// TxOptions returns a begin option that sets the isolation level and
// read-only flag of the transactions; give it to Runner.WithBegin. A level
// the driver does not support makes BEGIN, and so Run, fail with the
// driver's error.
func TxOptions(o sql.TxOptions) txn.BeginOption[bun.Tx] {
	return txn.NewBeginOption[bun.Tx]("txnbun", o)
}

// Classify is the driver-free classifier of every Runner of this package
// built without txn.WithClassifier, txnsql.ClassifyGeneric: a lost
// connection (driver.ErrBadConn), SQLSTATE 40001/40P01 through an error's
// SQLState() method, SQLite's busy and locked codes through its Code()
// method; everything else is txn.ClassPermanent. MySQL and MariaDB errors
// expose no such method: give txnmysql.Classify with txn.WithClassifier.
func Classify(err error) txn.Class {
	return txnsql.ClassifyGeneric(err)
}

// backend adapts a *bun.DB to txn.Backend and txn.Savepointer.
type backend struct {
	db *bun.DB
}

var (
	_ txn.Backend[bun.Tx]     = (*backend)(nil)
	_ txn.Savepointer[bun.Tx] = (*backend)(nil)
	_ txn.PoolSizer           = (*backend)(nil)
)

// Begin starts a transaction with db.BeginTx, so that bun's query hooks see
// it, with the sql.TxOptions of TxOptions, if any, on a context that ctx
// cancels only while it begins (txnsql.BeginDetached): database/sql would
// otherwise roll the transaction back by itself when ctx ends. bun.Tx
// keeps that context for the statements given none (tx.Exec, tx.Query,
// tx.QueryRow): it carries ctx's values, not its cancellation. Statements
// given fn's ctx (every query builder's Exec and Scan, tx.ExecContext)
// stay bounded by it.
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[bun.Tx]) (bun.Tx, error) {
	o, err := txnsql.ReadTxOptions("txnbun", opts)
	if err != nil {
		return bun.Tx{}, err
	}
	return txnsql.BeginDetached(ctx, "txnbun", func(ctx context.Context) (bun.Tx, error) {
		return b.db.BeginTx(ctx, o)
	}, bun.Tx.Rollback)
}

// Commit commits tx, bounded by ctx (txnsql.CommitOrRollbackWithin: past
// it the outcome is unknown; a ctx already ended sends no COMMIT and rolls
// back); a transaction that fn already ended yields an error
// wrapping txn.ErrTxDone.
func (b *backend) Commit(ctx context.Context, tx bun.Tx) error {
	return txnsql.CommitOrRollbackWithin(ctx, "txnbun", tx.Commit, tx.Rollback)
}

// Rollback rolls tx back, bounded by ctx (Run's RollbackTimeout).
func (b *backend) Rollback(ctx context.Context, tx bun.Tx) error {
	return txnsql.RollbackWithin(ctx, "txnbun", tx.Rollback)
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

// BeginSavepoint opens savepoint name in tx. The statements run on the
// context the core passes (a rollback's is detached from the caller's
// cancellation and bounded by RollbackTimeout), which bun's own
// tx.BeginTx savepoints cannot offer: their rollback runs on the context
// they were opened with.
func (b *backend) BeginSavepoint(ctx context.Context, tx bun.Tx, name string) (bun.Tx, error) {
	q := "SAVEPOINT " + name
	if msSavepoint(tx) {
		q = "SAVE TRANSACTION " + name
	}
	if _, err := tx.ExecContext(ctx, q); err != nil {
		return bun.Tx{}, err
	}
	return tx, nil
}

// ReleaseSavepoint releases savepoint name (SQL Server has no release).
func (b *backend) ReleaseSavepoint(ctx context.Context, tx bun.Tx, name string) error {
	if msSavepoint(tx) {
		return nil
	}
	_, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name)
	return err
}

// RollbackToSavepoint undoes the work done since savepoint name.
func (b *backend) RollbackToSavepoint(ctx context.Context, tx bun.Tx, name string) error {
	q := "ROLLBACK TO SAVEPOINT " + name
	if msSavepoint(tx) {
		q = "ROLLBACK TRANSACTION " + name
	}
	_, err := tx.ExecContext(ctx, q)
	return err
}

func msSavepoint(tx bun.Tx) bool {
	return tx.Dialect().Features().Has(feature.MSSavepoint)
}
