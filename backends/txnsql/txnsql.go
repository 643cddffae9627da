// Package txnsql runs txn transactions over database/sql, for any driver.
//
// The driver's errors are classified by the Classifier given to New
// (txnpgx.Classify, txnmysql.Classify, txnsqlite.Classify, or your own);
// driver.ErrBadConn is recognised as a lost connection whatever the
// classifier says. Savepoints use the standard SAVEPOINT, ROLLBACK TO
// SAVEPOINT and RELEASE SAVEPOINT statements, which PostgreSQL, MySQL,
// MariaDB and SQLite all accept.
package txnsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// Runner is the Runner type this package builds.
type Runner = txn.Runner[*sql.Tx]

// New returns a Runner over db whose errors are classified by classify
// (nil: only connection errors are recognised, nothing else is retried).
// A nil db yields a Runner whose Run returns txn.ErrNilRunner.
func New(db *sql.DB, classify txn.Classifier, opts ...txn.Option) *Runner {
	if db == nil {
		return txn.New[*sql.Tx](nil, opts...)
	}
	return txn.New[*sql.Tx](NewBackend(db, classify), opts...)
}

// TxOptions sets the isolation level and read-only flag of the transactions,
// on the Runner or per call.
func TxOptions(o sql.TxOptions) txn.Option {
	return txn.WithBeginOptions(o)
}

// Backend adapts a *sql.DB to txn.Backend and txn.Savepointer. Backend
// packages built on database/sql embed it.
type Backend struct {
	db       *sql.DB
	classify txn.Classifier
}

// NewBackend returns the Backend over db with classifier classify.
func NewBackend(db *sql.DB, classify txn.Classifier) *Backend {
	return &Backend{db: db, classify: classify}
}

// DB returns the database handle.
func (b *Backend) DB() *sql.DB { return b.db }

// Begin starts a transaction. opts may be nil, a sql.TxOptions or a
// *sql.TxOptions; anything else is an error matching txn.ErrBadOption.
func (b *Backend) Begin(ctx context.Context, opts any) (*sql.Tx, error) {
	o, err := txOptions(opts)
	if err != nil {
		return nil, err
	}
	return b.db.BeginTx(ctx, o)
}

func txOptions(opts any) (*sql.TxOptions, error) {
	switch v := opts.(type) {
	case nil:
		return nil, nil
	case sql.TxOptions:
		return &v, nil
	case *sql.TxOptions:
		return v, nil
	}
	return nil, fmt.Errorf("%w: txnsql expects sql.TxOptions, got %T", txn.ErrBadOption, opts)
}

// Commit commits tx; a transaction that fn already ended yields an error
// wrapping txn.ErrTxDone.
func (b *Backend) Commit(_ context.Context, tx *sql.Tx) error {
	return doneErr(tx.Commit())
}

// Rollback rolls tx back.
func (b *Backend) Rollback(_ context.Context, tx *sql.Tx) error {
	return doneErr(tx.Rollback())
}

func doneErr(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return err
}

// Classify applies the Backend's classifier, then ClassifyConn.
func (b *Backend) Classify(err error) txn.Class {
	if b.classify != nil {
		if c := b.classify(err); c != txn.ClassPermanent {
			return c
		}
	}
	return ClassifyConn(err)
}

// BeginSavepoint executes SAVEPOINT name.
func (b *Backend) BeginSavepoint(ctx context.Context, tx *sql.Tx, name string) (*sql.Tx, error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		return nil, err
	}
	return tx, nil
}

// ReleaseSavepoint executes RELEASE SAVEPOINT name.
func (b *Backend) ReleaseSavepoint(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+name)
	return err
}

// RollbackToSavepoint executes ROLLBACK TO SAVEPOINT name.
func (b *Backend) RollbackToSavepoint(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name)
	return err
}

// ClassifyConn returns txn.ClassConnLost for driver.ErrBadConn and
// txn.ClassPermanent for everything else. database/sql's contract says a
// driver returns ErrBadConn only when the server cannot have acted, but not
// every driver keeps it, so at COMMIT it is treated as ambiguous. It looks
// through wrapping and never panics: typed nils in err's chain are skipped.
func ClassifyConn(err error) txn.Class {
	if errchain.Is(err, driver.ErrBadConn) {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}
