// Package txnbun runs txn transactions through bun (github.com/uptrace/bun):
// fn receives the bun.Tx of the attempt, and the Runner retries fn in a fresh
// transaction when the database reports a lost race.
//
//	r := txnbun.NewWithClassifier(db, txnpgx.Classify) // db is a *bun.DB; build once, share
//	err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
//		_, err := tx.NewUpdate().Model(&acct).WherePK().Exec(ctx)
//		return err
//	})
//
// Errors are classified by the classifier given to NewWithClassifier, taken
// from the backend package of the driver under the *bun.DB: txnpgx.Classify for
// pgdialect over pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib),
// txnmysql.Classify for mysqldialect over github.com/go-sql-driver/mysql,
// txnsqlite.Classify for sqlitedialect over modernc.org/sqlite. This package
// imports none of them, so a bun user downloads only the driver they already
// use. bun's own pgdriver reports server errors as pgdriver.Error values,
// which txnpgx.Classify does not read: the README shows the five lines that
// hand their SQLSTATE to it. Whatever the classifier leaves permanent is
// still checked by Classify, so a lost connection is never mistaken for a
// definite failure.
//
// A Run nested in fn on the same Runner, and txn.Savepoint, run in a
// savepoint of the transaction (SAVEPOINT, ROLLBACK TO SAVEPOINT, RELEASE
// SAVEPOINT; SAVE TRANSACTION on SQL Server), issued through the bun.Tx so
// that bun's query hooks see them. The nested fn receives the same bun.Tx.
package txnbun

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/feature"
)

// Runner is the Runner type this package builds: fn receives a bun.Tx.
type Runner = txn.Runner[bun.Tx]

// New returns a Runner over db whose errors are classified by Classify
// alone, which knows no driver: use NewWithClassifier to retry the
// database's conflicts. Options configure the Runner (limits, backoff,
// observer, TxOptions, ...); the Runner is safe for concurrent use and
// meant to be shared.
//
// A nil db yields a Runner whose Run returns txn.ErrNilRunner; an invalid
// option yields one whose Run returns an error matching txn.ErrBadOption.
func New(db *bun.DB, opts ...txn.Option) *Runner {
	return NewWithClassifier(db, nil, opts...)
}

// NewWithClassifier is New with classify, the Classify function of the
// backend package matching db's driver (txnpgx.Classify, txnmysql.Classify,
// txnsqlite.Classify), or a function of yours wrapping one. Errors that
// classify leaves permanent are still checked by Classify. A nil classify
// means Classify alone. Failures are reported as for New.
func NewWithClassifier(db *bun.DB, classify txn.Classifier, opts ...txn.Option) *Runner {
	if db == nil {
		return txn.New[bun.Tx](nil, opts...)
	}
	return txn.New[bun.Tx](&backend{db: db, classify: classify}, opts...)
}

// TxOptions sets the isolation level and read-only flag of the transactions,
// on the Runner (passed to New) or for one call (passed to Run or txn.Do).
// Backend options built the same way, such as txnsqlite.Deferred, work too.
// A level the driver does not support makes BEGIN, and so Run, fail with the
// driver's error.
func TxOptions(o sql.TxOptions) txn.Option {
	return txnsql.TxOptions(o)
}

// Classify is the driver-free classification every Runner of this package
// applies, after the classifier given to NewWithClassifier: it returns
// txn.ClassConnLost for driver.ErrBadConn (retried before COMMIT, an
// unknown outcome during it) and txn.ClassPermanent for everything else.
func Classify(err error) txn.Class {
	return txnsql.ClassifyConn(err)
}

// backend adapts a *bun.DB to txn.Backend and txn.Savepointer.
type backend struct {
	db       *bun.DB
	classify txn.Classifier
}

// Begin starts a transaction with db.BeginTx, so that bun's query hooks see
// it. opts may be nil, a sql.TxOptions or a *sql.TxOptions.
func (b *backend) Begin(ctx context.Context, opts any) (bun.Tx, error) {
	var o *sql.TxOptions
	switch v := opts.(type) {
	case nil:
	case sql.TxOptions:
		o = &v
	case *sql.TxOptions:
		o = v
	default:
		return bun.Tx{}, fmt.Errorf("%w: txnbun expects sql.TxOptions, got %T", txn.ErrBadOption, opts)
	}
	return b.db.BeginTx(ctx, o)
}

// Commit commits tx; a transaction that fn already ended yields an error
// wrapping txn.ErrTxDone.
func (b *backend) Commit(_ context.Context, tx bun.Tx) error {
	return doneErr(tx.Commit())
}

// Rollback rolls tx back.
func (b *backend) Rollback(_ context.Context, tx bun.Tx) error {
	return doneErr(tx.Rollback())
}

func doneErr(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return err
}

// Classify applies the Runner's classifier, then Classify.
func (b *backend) Classify(err error) txn.Class {
	if b.classify != nil {
		if c := b.classify(err); c != txn.ClassPermanent {
			return c
		}
	}
	return Classify(err)
}

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
