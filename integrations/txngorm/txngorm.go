// Package txngorm runs txn transactions through GORM (gorm.io/gorm): fn
// receives the *gorm.DB bound to the transaction, and Run re-runs fn in a
// fresh transaction when the database reports a lost race.
//
//	r := txngorm.New(db, txn.WithClassifier(txnpgx.Classify)) // build once, share
//	err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
//		return tx.Model(&Account{}).Where("id = ?", from).
//			Update("balance", gorm.Expr("balance - ?", amount)).Error
//	})
//
// # Classification
//
// GORM hands back the driver's own error value (wrapped with %w only when
// an earlier error of the same chain is already there; with
// gorm.Config.TranslateError it replaces only constraint violations, never a
// deadlock or a serialization failure), so the backends' classifiers apply
// unchanged: pass txnpgx.Classify (gorm.io/driver/postgres, which
// uses pgx) or txnmysql.Classify (gorm.io/driver/mysql) with txn.WithClassifier.
// This package imports no driver; New uses Classify, a fallback that
// recognises errors only through the methods they expose (see Classify),
// which is what a pure-Go SQLite dialector built on modernc.org/sqlite's
// code, such as github.com/glebarez/sqlite, needs: its driver registers the
// same database/sql name as modernc.org/sqlite, so txnsqlite cannot be
// linked beside it.
//
// # Nesting
//
// A Run nested in fn on the same Runner, and txn.Savepoint, open a GORM
// savepoint (tx.SavePoint, released with RELEASE SAVEPOINT) and undo it with
// tx.RollbackTo when the nested fn returns a permanent error; a retryable
// error is returned unchanged and restarts the whole transaction from the
// outermost Run. GORM's own tx.Transaction inside fn also nests through a
// savepoint (unless gorm.Config.DisableNestedTransaction is set, in which
// case it simply joins), but the Runner does not see inside it: prefer a
// nested Run, after which Run does not commit the attempt even if fn
// swallows a retryable error.
package txngorm

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/internal/errchain"
	"gorm.io/gorm"
)

// Runner is the Runner type this package builds; fn receives the *gorm.DB
// bound to the transaction.
type Runner = txn.Runner[*gorm.DB]

// New returns a Runner over db (the handle gorm.Open returned, not one bound to a transaction). Its errors are classified by
// Classify, the driver-free fallback; give the classifier of the database
// behind db with txn.WithClassifier (txnpgx.Classify, txnmysql.Classify),
// and a lost connection is still recognised under it. A nil db yields a
// Runner whose Run returns txn.ErrNilRunner; an invalid option one whose Run
// returns an error matching txn.ErrBadOption.
func New(db *gorm.DB, opts ...txn.RunnerOption) *Runner {
	if db == nil {
		return txn.New[*gorm.DB](nil, opts...)
	}
	return txn.New[*gorm.DB](&backend{db: db}, opts...)
}

// TxOptions returns a begin option that sets the isolation level and
// read-only flag of the transactions; give it to Runner.WithBegin.
func TxOptions(o sql.TxOptions) txn.BeginOption[*gorm.DB] {
	return txn.NewBeginOption[*gorm.DB]("txngorm", o)
}

// Classify is the classifier that needs no driver, txnsql.ClassifyGeneric:
// it returns txn.ClassConnLost for driver.ErrBadConn; txn.ClassRetryable
// for an error whose SQLState() method reports 40001 or 40P01 (pgx, lib/pq)
// and for one whose Code() int method reports SQLITE_BUSY or SQLITE_LOCKED
// (modernc.org/sqlite, github.com/glebarez/go-sqlite); and
// txn.ClassPermanent for everything else, including nil and typed nils.
// MySQL and MariaDB errors expose no such method: use txnmysql.Classify.
func Classify(err error) txn.Class {
	return txnsql.ClassifyGeneric(err)
}

// backend adapts a *gorm.DB to txn.Backend and txn.Savepointer.
type backend struct {
	db *gorm.DB
}

var (
	_ txn.Backend[*gorm.DB]      = (*backend)(nil)
	_ txn.Savepointer[*gorm.DB]  = (*backend)(nil)
	_ txn.HandleBinder[*gorm.DB] = (*backend)(nil)
	_ txn.PoolSizer              = (*backend)(nil)
)

// Begin starts a transaction with GORM's Begin on a context that ctx
// cancels only while it begins (txnsql.BeginDetached): database/sql would
// otherwise roll the transaction back by itself when ctx ends. The Runner
// then binds the handle to fn's context (BindHandle).
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*gorm.DB]) (*gorm.DB, error) {
	o, err := txnsql.ReadTxOptions("txngorm", opts)
	if err != nil {
		return nil, err
	}
	var os []*sql.TxOptions
	if o != nil {
		os = append(os, o)
	}
	return txnsql.BeginDetached(ctx, "txngorm", func(bctx context.Context) (*gorm.DB, error) {
		tx := b.db.WithContext(withDeadlineOf(bctx, ctx)).Begin(os...)
		return tx, tx.Error
	}, func(tx *gorm.DB) error { return tx.Rollback().Error })
}

// BindHandle returns a session of tx bound to ctx, the context fn (or a
// nested Run's fn) receives: every statement fn runs on the handle stays
// bounded by the caller's context, and what GORM hands its hooks and
// callbacks (tx.Statement.Context) carries the transaction or savepoint
// of that level, so that txn.OnCommit, txn.Savepoint and the repository
// helpers work from a hook as from fn.
func (b *backend) BindHandle(ctx context.Context, tx *gorm.DB) *gorm.DB {
	return tx.WithContext(ctx)
}

// Commit commits the transaction tx is bound to, bounded by ctx
// (txnsql.CommitOrRollbackWithin: past it the outcome is unknown; a ctx
// already ended sends no COMMIT and rolls back). It calls the
// transaction directly rather than tx.Commit, which would add the error to
// tx.Error.
func (b *backend) Commit(ctx context.Context, tx *gorm.DB) error {
	c, err := committer(tx)
	if err != nil {
		return err
	}
	return txnsql.CommitOrRollbackWithin(ctx, "txngorm", c.Commit, c.Rollback)
}

// Rollback rolls back the transaction tx is bound to, bounded by ctx
// (Run's RollbackTimeout).
func (b *backend) Rollback(ctx context.Context, tx *gorm.DB) error {
	c, err := committer(tx)
	if err != nil {
		return err
	}
	return txnsql.RollbackWithin(ctx, "txngorm", c.Rollback)
}

// PoolSize returns the MaxOpenConnections of the *sql.DB under db (0 when
// unlimited, or when db has none), read when the Runner is built: the
// adaptive limit then starts at, and never exceeds, the pool.
func (b *backend) PoolSize() int {
	sqlDB, err := b.db.DB()
	if err != nil {
		return 0
	}
	return sqlDB.Stats().MaxOpenConnections
}

// Classify is the package's Classify; txn.WithClassifier replaces it.
func (b *backend) Classify(err error) txn.Class { return Classify(err) }

// ClassifyConn recognises a lost connection (driver.ErrBadConn), also
// under a classifier given with txn.WithClassifier.
func (b *backend) ClassifyConn(err error) txn.Class { return txnsql.Classify(err) }

// BeginSavepoint runs GORM's SavePoint on a session of tx bound to ctx, and
// returns tx; the Runner binds it to the nested fn's context (BindHandle).
// A session keeps a failed SAVEPOINT out of tx.Error, which later
// statements on tx would inherit.
func (b *backend) BeginSavepoint(ctx context.Context, tx *gorm.DB, name string) (*gorm.DB, error) {
	if err := tx.WithContext(ctx).SavePoint(name).Error; err != nil {
		return nil, err
	}
	return tx, nil
}

// ReleaseSavepoint runs RELEASE SAVEPOINT, which GORM has no method for,
// outside GORM's prepared-statement cache as GORM's SavePoint does. SQL
// Server has no RELEASE: there it does nothing.
func (b *backend) ReleaseSavepoint(ctx context.Context, sp *gorm.DB, name string) error {
	if sp.Dialector.Name() == "sqlserver" {
		return nil
	}
	s := sp.WithContext(ctx)
	if p, ok := s.Statement.ConnPool.(*gorm.PreparedStmtTX); ok {
		s.Statement.ConnPool = p.Tx
	}
	return s.Exec("RELEASE SAVEPOINT " + name).Error
}

// RollbackToSavepoint runs GORM's RollbackTo on a session of sp.
func (b *backend) RollbackToSavepoint(ctx context.Context, sp *gorm.DB, name string) error {
	return sp.WithContext(ctx).RollbackTo(name).Error
}

// deadlineOf is a context with the cancellation and values of one context
// and the deadline of another. GORM's Begin reads the deadline only to
// decide whether to apply gorm.Config.DefaultTransactionTimeout (when the
// context has none); the detached begin context must not change that
// decision, and the caller's deadline must not end the transaction.
type deadlineOf struct {
	context.Context
	deadline time.Time
}

// Deadline returns the caller's deadline.
func (c deadlineOf) Deadline() (time.Time, bool) { return c.deadline, true }

// withDeadlineOf returns bctx reporting the deadline of ctx, if it has one.
func withDeadlineOf(bctx, ctx context.Context) context.Context {
	if d, ok := ctx.Deadline(); ok {
		return deadlineOf{Context: bctx, deadline: d}
	}
	return bctx
}

// committer returns the transaction tx is bound to.
func committer(tx *gorm.DB) (gorm.TxCommitter, error) {
	c, ok := tx.Statement.ConnPool.(gorm.TxCommitter)
	if !ok || errchain.IsNil(c) {
		return nil, fmt.Errorf("txngorm: handle is not bound to a transaction: %w", gorm.ErrInvalidTransaction)
	}
	return c, nil
}
