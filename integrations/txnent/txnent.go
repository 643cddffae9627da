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
//	r := txnent.New(drv, txn.WithClassifier(txnpgx.Classify)) // build once, share
//	err := r.Run(ctx, txnent.WithClient(client.BindDriver, func(ctx context.Context, c *ent.Client) error {
//		return c.Account.UpdateOneID(1).AddBalance(-100).Exec(ctx)
//	}))
//
// Errors are classified by the classifier given with txn.WithClassifier, taken
// from the backend package of the database/sql driver under the ent driver:
// txnpgx.Classify (pgx's stdlib driver), txnmysql.Classify
// (github.com/go-sql-driver/mysql), txnsqlite.Classify (modernc.org/sqlite).
// This package imports none of them. Whatever the classifier leaves
// permanent is still checked for a lost connection, never mistaken for a
// definite failure. Without one, Classify (txnsql.ClassifyGeneric) applies.
//
// ent's SQL driver has no savepoints, so a Run nested in fn on the same
// Runner (and txn.Savepoint) issues SAVEPOINT, ROLLBACK TO SAVEPOINT and
// RELEASE SAVEPOINT statements on the transaction itself: a nested Run is a
// real savepoint, not a join. The nested fn receives the same *Tx.
package txnent

import (
	"context"
	"database/sql"
	"fmt"

	"entgo.io/ent/dialect"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// Runner is the Runner type this package builds: fn receives a *Tx.
type Runner = txn.Runner[*Tx]

// New returns a Runner over drv, the driver the generated client was opened with (an *entsql.Driver, possibly wrapped by dialect.Debug). Its errors are classified by
// Classify, which knows no driver: give the classifier of the backend
// package matching the database/sql driver with txn.WithClassifier
// (txnpgx.Classify, txnmysql.Classify, txnsqlite.Classify); a lost
// connection is still recognised under it. A nil drv yields a Runner whose
// Run returns txn.ErrNilRunner; an invalid option one whose Run returns an
// error matching txn.ErrBadOption.
func New(drv dialect.Driver, opts ...txn.RunnerOption) *Runner {
	if drv == nil {
		return txn.New[*Tx](nil, opts...)
	}
	return txn.New[*Tx](&backend{drv: drv}, opts...)
}

// TxOptions returns a begin option that sets the isolation level and
// read-only flag of the transactions; give it to Runner.WithBegin. A level
// the driver does not support makes BEGIN, and so Run, fail with the
// driver's error.
func TxOptions(o sql.TxOptions) txn.BeginOption[*Tx] {
	return txn.NewBeginOption[*Tx]("txnent", o)
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
	drv dialect.Driver
}

var (
	_ txn.Backend[*Tx]     = (*backend)(nil)
	_ txn.Savepointer[*Tx] = (*backend)(nil)
	_ txn.PoolSizer        = (*backend)(nil)
)

// txBeginner is implemented by ent's SQL driver and by dialect.Debug.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (dialect.Tx, error)
}

// Begin starts a transaction with the sql.TxOptions of TxOptions, if any,
// on a context that ctx cancels only while it begins
// (txnsql.BeginDetached): database/sql would otherwise roll the
// transaction back by itself when ctx ends. fn's statements take their
// context per call.
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*Tx]) (*Tx, error) {
	o, err := txnsql.ReadTxOptions("txnent", opts)
	if err != nil {
		return nil, err
	}
	tb, ok := b.drv.(txBeginner)
	if !ok && o != nil {
		return nil, fmt.Errorf("%w: driver %T has no BeginTx method for transaction options", txn.ErrBadOption, b.drv)
	}
	tx, err := txnsql.BeginDetached(ctx, "txnent", func(ctx context.Context) (dialect.Tx, error) {
		if ok {
			return tb.BeginTx(ctx, o)
		}
		return b.drv.Tx(ctx)
	}, dialect.Tx.Rollback)
	if err != nil {
		return nil, err
	}
	return &Tx{tx: tx, dialect: b.drv.Dialect()}, nil
}

// Commit commits tx, bounded by ctx (txnsql.CommitOrRollbackWithin: past
// it the outcome is unknown; a ctx already ended sends no COMMIT and rolls
// back); a transaction already ended yields an error
// wrapping txn.ErrTxDone.
func (b *backend) Commit(ctx context.Context, tx *Tx) error {
	return txnsql.CommitOrRollbackWithin(ctx, "txnent", tx.tx.Commit, tx.tx.Rollback)
}

// Rollback rolls tx back, bounded by ctx (Run's RollbackTimeout).
func (b *backend) Rollback(ctx context.Context, tx *Tx) error {
	return txnsql.RollbackWithin(ctx, "txnent", tx.tx.Rollback)
}

// PoolSize returns the MaxOpenConnections of the *sql.DB under the driver
// (an *entsql.Driver, possibly wrapped by dialect.Debug; 0 when unlimited
// or unknown), read when the Runner is built: the adaptive limit then
// starts at, and never exceeds, the pool.
func (b *backend) PoolSize() int {
	drv := b.drv
	if d, ok := drv.(*dialect.DebugDriver); ok {
		drv = d.Driver
	}
	if p, ok := drv.(interface{ DB() *sql.DB }); ok {
		if db := p.DB(); db != nil {
			return db.Stats().MaxOpenConnections
		}
	}
	return 0
}

// Classify is the package's Classify; txn.WithClassifier replaces it.
func (b *backend) Classify(err error) txn.Class { return Classify(err) }

// ClassifyConn recognises a lost connection (driver.ErrBadConn), also
// under a classifier given with txn.WithClassifier.
func (b *backend) ClassifyConn(err error) txn.Class { return txnsql.Classify(err) }

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
