package txnsql_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// These tests need no driver: a backend that hands out distinct *sql.Tx
// values checks which one the helpers return. That a statement run on the
// returned transaction is rolled back with the attempt is tested against
// MariaDB and SQLite in integrations/servicetest.

type handBackend struct{ begun []*sql.Tx }

func (b *handBackend) Begin(context.Context, []txn.BeginOption[*sql.Tx]) (*sql.Tx, error) {
	tx := new(sql.Tx)
	b.begun = append(b.begun, tx)
	return tx, nil
}
func (b *handBackend) Commit(context.Context, *sql.Tx) error   { return nil }
func (b *handBackend) Rollback(context.Context, *sql.Tx) error { return nil }
func (b *handBackend) Classify(error) txn.Class                { return txn.ClassPermanent }

func TestTxAndTxOr(t *testing.T) {
	b := &handBackend{}
	r := txn.New[*sql.Tx](b)
	pool := &sql.DB{}
	ctx := context.Background()

	_, err := txnsql.Tx(ctx)
	assert.ErrorIs(t, err, txn.ErrNoTransaction)
	assert.Same(t, pool, txnsql.TxOr(ctx, pool).(*sql.DB), "no transaction: the pool")
	//nolint:staticcheck // a nil context is the bad input under test
	_, err = txnsql.Tx(nil) //lint:ignore SA1012 testing nil
	assert.ErrorIs(t, err, txn.ErrNilContext)

	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		got, err := txnsql.Tx(ctx)
		require.NoError(t, err)
		assert.Same(t, tx, got)
		assert.Same(t, tx, txnsql.TxOr(ctx, pool).(*sql.Tx))
		return nil
	}))
	assert.Len(t, b.begun, 1)
}

// A repository that must run in its caller's transaction.
func ExampleTx() {
	debit := func(ctx context.Context, id, amount int64) error {
		tx, err := txnsql.Tx(ctx) // txn.ErrNoTransaction outside a Run
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - ? WHERE id = ?", amount, id)
		return err
	}
	var db *sql.DB // sql.Open(driver, dsn)
	r := txnsql.New(db, nil)
	_ = r.Run(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
		return debit(ctx, 1, 10)
	})
}

// A read that joins the caller's transaction if there is one, and uses the
// pool otherwise.
func ExampleTxOr() {
	var db *sql.DB
	balance := func(ctx context.Context, id int64) (int64, error) {
		var b int64
		err := txnsql.TxOr(ctx, db).QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = ?", id).Scan(&b)
		return b, err
	}
	_, _ = balance(context.Background(), 1)
}
