package txnsql_test

import (
	"context"
	"database/sql"

	"github.com/txnkit/txn/backends/txnsql"
)

// myBackend is the txn.Backend of a library over database/sql whose
// transaction handle is its own (here simply *sql.Tx): Begin, Commit and
// Rollback get the bounds of txnsql's own backend from three calls.
type myBackend struct{ db *sql.DB }

func (b myBackend) Begin(ctx context.Context) (*sql.Tx, error) {
	// ctx bounds the wait for a connection and BEGIN; ending it later does
	// not make database/sql roll the transaction back behind Run's back.
	return txnsql.BeginDetached(ctx, "mylib", func(ctx context.Context) (*sql.Tx, error) {
		return b.db.BeginTx(ctx, nil)
	}, (*sql.Tx).Rollback)
}

func (b myBackend) Commit(ctx context.Context, tx *sql.Tx) error {
	// Past ctx, the error is classified txn.ClassConnLost by
	// txnsql.Classify: Run reports txn.ErrCommitUnknown.
	return txnsql.CommitWithin(ctx, "mylib", tx.Commit)
}

func (b myBackend) Rollback(ctx context.Context, tx *sql.Tx) error {
	// ctx is Run's rollback context, bounded by txn.RollbackTimeout.
	return txnsql.RollbackWithin(ctx, "mylib", tx.Rollback)
}

// A library that runs transactions over database/sql under its own handle
// type (as txngorm, txnsqlx, txnbun and txnent do) begins them detached
// from the caller's cancellation and bounds COMMIT and ROLLBACK by their
// contexts.
func ExampleBeginDetached() {
	db, err := sql.Open("yourdriver", "dsn")
	if err != nil {
		return
	}
	b := myBackend{db: db}
	ctx := context.Background()
	tx, err := b.Begin(ctx)
	if err != nil {
		return
	}
	if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - 10 WHERE id = 1"); err != nil {
		_ = b.Rollback(ctx, tx)
		return
	}
	_ = b.Commit(ctx, tx)
}
