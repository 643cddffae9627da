package txnsql_test

import (
	"context"
	"database/sql"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// myBackend is the txn.Backend of a library over database/sql whose
// transaction handle is its own (here simply *sql.Tx): Begin, Commit and
// Rollback get the bounds of txnsql's own backend from three calls.
type myBackend struct{ db *sql.DB }

var _ txn.Backend[*sql.Tx] = myBackend{}

func (b myBackend) Begin(ctx context.Context, _ []txn.BeginOption[*sql.Tx]) (*sql.Tx, error) {
	// ctx bounds the wait for a connection and BEGIN; ending it later does
	// not make database/sql roll the transaction back behind Run's back.
	// (This sketch ignores begin options; ReadTxOptions reads them.)
	return txnsql.BeginDetached(ctx, "mylib", func(ctx context.Context) (*sql.Tx, error) {
		return b.db.BeginTx(ctx, nil)
	}, (*sql.Tx).Rollback)
}

func (b myBackend) Commit(ctx context.Context, tx *sql.Tx) error {
	// If ctx has already ended, no COMMIT is sent: tx is rolled back and
	// the error is definite. Past ctx while COMMIT runs, the error is
	// classified txn.ClassConnLost by txnsql.Classify: Run reports
	// txn.ErrCommitUnknown.
	return txnsql.CommitOrRollbackWithin(ctx, "mylib", tx.Commit, tx.Rollback)
}

func (b myBackend) Rollback(ctx context.Context, tx *sql.Tx) error {
	// ctx is Run's rollback context, bounded by txn.RollbackTimeout.
	return txnsql.RollbackWithin(ctx, "mylib", tx.Rollback)
}

func (b myBackend) Classify(err error) txn.Class { return txnsql.Classify(err) }

// A library that runs transactions over database/sql under its own handle
// type (as txngorm, txnsqlx, txnbun and txnent do) begins them detached
// from the caller's cancellation, sends no COMMIT once the caller's
// context has ended, and bounds COMMIT and ROLLBACK by their contexts.
func ExampleBeginDetached() {
	db, err := sql.Open("yourdriver", "dsn")
	if err != nil {
		return
	}
	r := txn.New[*sql.Tx](myBackend{db: db})
	_ = r.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - 10 WHERE id = 1")
		return err
	})
}
