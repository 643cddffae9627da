// Package txnent runs txn transactions for ent (entgo.io/ent) clients over
// ent's SQL driver (entgo.io/ent/dialect/sql), and retries them when the
// database reports a lost race.
//
// ent's client is generated, so this package cannot name it. The Runner
// begins transactions on the driver the generated client was opened with,
// and fn receives a *Tx: a dialect.Driver bound to the attempt's
// transaction. Six lines added to the generated package (shown in the
// README and in the package's internal/ent/txn.go) turn it into a client
// that keeps the original client's hooks, interceptors and debug setting:
//
//	drv := entsql.OpenDB(dialect.Postgres, db)
//	client := ent.NewClient(ent.Driver(drv))
//	r := txnent.NewWithClassifier(drv, txnpgx.Classify) // build once, share
//	err := r.Run(ctx, txnent.WithClient(client.BindDriver, func(ctx context.Context, c *ent.Client) error {
//		return c.Account.UpdateOneID(1).AddBalance(-100).Exec(ctx)
//	}))
//
// Errors are classified by the classifier given to NewWithClassifier, taken
// from the backend package of the database/sql driver under the ent driver:
// txnpgx.Classify (pgx's stdlib driver), txnmysql.Classify
// (github.com/go-sql-driver/mysql), txnsqlite.Classify (modernc.org/sqlite).
// This package imports none of them. Whatever the classifier leaves
// permanent is still checked by Classify, so a lost connection is never
// mistaken for a definite failure.
//
// ent's SQL driver has no savepoints, so a Run nested in fn on the same
// Runner (and txn.Savepoint) issues SAVEPOINT, ROLLBACK TO SAVEPOINT and
// RELEASE SAVEPOINT statements on the transaction itself: a nested Run is a
// real savepoint, not a join. The nested fn receives the same *Tx.
package txnent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"entgo.io/ent/dialect"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// Runner is the Runner type this package builds: fn receives a *Tx.
type Runner = txn.Runner[*Tx]

// New returns a Runner that begins its transactions on drv, the driver the
// generated client was opened with (an *entsql.Driver, possibly wrapped by
// dialect.Debug), and classifies errors with Classify alone, which knows no
// driver: use NewWithClassifier to retry the database's conflicts. Options
// configure the Runner; it is safe for concurrent use and meant to be
// shared.
//
// A nil drv yields a Runner whose Run returns txn.ErrNilRunner; an invalid
// option yields one whose Run returns an error matching txn.ErrBadOption.
func New(drv dialect.Driver, opts ...txn.Option) *Runner {
	return NewWithClassifier(drv, nil, opts...)
}

// NewWithClassifier is New with classify, the Classify function of the
// backend package matching the database/sql driver under drv
// (txnpgx.Classify, txnmysql.Classify, txnsqlite.Classify), or a function of
// yours wrapping one. Errors that classify leaves permanent are still
// checked by Classify. A nil classify means Classify alone. Failures are
// reported as for New.
func NewWithClassifier(drv dialect.Driver, classify txn.Classifier, opts ...txn.Option) *Runner {
	if drv == nil {
		return txn.New[*Tx](nil, opts...)
	}
	return txn.New[*Tx](&backend{drv: drv, classify: classify}, opts...)
}

// TxOptions sets the isolation level and read-only flag of the transactions,
// on the Runner (passed to New) or for one call (passed to Run or txn.Do).
// Backend options built the same way, such as txnsqlite.Deferred, work too.
// The driver must have a BeginTx method (ent's SQL driver and dialect.Debug
// have one); otherwise Run returns an error matching txn.ErrBadOption.
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

// WithClient adapts fn, which takes a generated client, to the function
// Run takes: for every attempt (and every nested Run) it calls bind with
// the *Tx and passes fn the client bind returns. bind is the glue method of
// the generated package (client.BindDriver in the README); it must return a
// client whose driver is the one it was given.
func WithClient[C any](bind func(dialect.Driver) C, fn func(ctx context.Context, client C) error) func(context.Context, *Tx) error {
	return func(ctx context.Context, tx *Tx) error {
		return fn(ctx, bind(tx))
	}
}

// Tx is the transaction of one attempt, seen as a dialect.Driver so that a
// generated client can be bound to it. Its statements run in the
// transaction; it cannot commit or roll back: Run does.
type Tx struct {
	tx      dialect.Tx
	dialect string
}

var _ dialect.Driver = (*Tx)(nil)

// Exec runs a statement in the transaction; it returns the driver's error.
func (t *Tx) Exec(ctx context.Context, query string, args, v any) error {
	return t.tx.Exec(ctx, query, args, v)
}

// Query runs a query in the transaction; it returns the driver's error.
func (t *Tx) Query(ctx context.Context, query string, args, v any) error {
	return t.tx.Query(ctx, query, args, v)
}

// Tx returns the same transaction with Commit and Rollback that do nothing,
// as ent's own transactional driver does: ent's builders open "a
// transaction" for multi-statement operations (edges, bulk creates), and
// they must join the Run's. A client.Tx(ctx) called by fn on a bound client
// joins it the same way; use a nested Run or txn.Savepoint for work that
// may have to be undone on its own. It never fails.
func (t *Tx) Tx(context.Context) (dialect.Tx, error) {
	return dialect.NopTx(t), nil
}

// Close does nothing and returns nil: the database belongs to the
// original client.
func (t *Tx) Close() error { return nil }

// Dialect returns the dialect of the driver the transaction was begun on.
func (t *Tx) Dialect() string { return t.dialect }

// backend adapts a dialect.Driver to txn.Backend and txn.Savepointer.
type backend struct {
	drv      dialect.Driver
	classify txn.Classifier
}

// txBeginner is implemented by ent's SQL driver and by dialect.Debug.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (dialect.Tx, error)
}

// Begin starts a transaction. opts may be nil, a sql.TxOptions or a
// *sql.TxOptions.
func (b *backend) Begin(ctx context.Context, opts any) (*Tx, error) {
	var o *sql.TxOptions
	switch v := opts.(type) {
	case nil:
	case sql.TxOptions:
		o = &v
	case *sql.TxOptions:
		o = v
	default:
		return nil, fmt.Errorf("%w: txnent expects sql.TxOptions, got %T", txn.ErrBadOption, opts)
	}
	var (
		tx  dialect.Tx
		err error
	)
	if tb, ok := b.drv.(txBeginner); ok {
		tx, err = tb.BeginTx(ctx, o)
	} else if o != nil {
		return nil, fmt.Errorf("%w: driver %T has no BeginTx method for transaction options", txn.ErrBadOption, b.drv)
	} else {
		tx, err = b.drv.Tx(ctx)
	}
	if err != nil {
		return nil, err
	}
	return &Tx{tx: tx, dialect: b.drv.Dialect()}, nil
}

// Commit commits tx; a transaction already ended yields an error wrapping
// txn.ErrTxDone.
func (b *backend) Commit(_ context.Context, tx *Tx) error {
	return doneErr(tx.tx.Commit())
}

// Rollback rolls tx back.
func (b *backend) Rollback(_ context.Context, tx *Tx) error {
	return doneErr(tx.tx.Rollback())
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

// BeginSavepoint executes SAVEPOINT name in tx and returns tx.
func (b *backend) BeginSavepoint(ctx context.Context, tx *Tx, name string) (*Tx, error) {
	if err := tx.Exec(ctx, "SAVEPOINT "+name, []any{}, nil); err != nil {
		return nil, err
	}
	return tx, nil
}

// ReleaseSavepoint executes RELEASE SAVEPOINT name.
func (b *backend) ReleaseSavepoint(ctx context.Context, tx *Tx, name string) error {
	return tx.Exec(ctx, "RELEASE SAVEPOINT "+name, []any{}, nil)
}

// RollbackToSavepoint executes ROLLBACK TO SAVEPOINT name.
func (b *backend) RollbackToSavepoint(ctx context.Context, tx *Tx, name string) error {
	return tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+name, []any{}, nil)
}
