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

// foreignBackend hands out handles of type T, which are not *sql.Tx.
type foreignBackend[T any] struct{ mk func() T }

func (b foreignBackend[T]) Begin(context.Context, []txn.BeginOption[T]) (T, error) {
	return b.mk(), nil
}
func (foreignBackend[T]) Commit(context.Context, T) error   { return nil }
func (foreignBackend[T]) Rollback(context.Context, T) error { return nil }
func (foreignBackend[T]) Classify(error) txn.Class          { return txn.ClassPermanent }

// dbtxHandle stands for an ORM's handle that has DBTX's methods, as
// *sqlx.Tx and bun.Tx do.
type dbtxHandle struct{ txnsql.DBTX }

// gormLike stands for a handle without them, as GORM's *gorm.DB.
type gormLike struct{}

// TestTxOrInsideAnotherHandlesRun: in a Run whose handle is not a *sql.Tx,
// TxOr returns the handle when it is a DBTX, and panics when it is not,
// rather than hand out the pool, whose statements would commit outside the
// transaction. A context kept past its Run gets the pool again.
func TestTxOrInsideAnotherHandlesRun(t *testing.T) {
	pool := &sql.DB{}
	ctx := context.Background()

	r := txn.New[*dbtxHandle](foreignBackend[*dbtxHandle]{mk: func() *dbtxHandle { return &dbtxHandle{} }})
	var kept context.Context
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *dbtxHandle) error {
		kept = ctx
		assert.Same(t, tx, txnsql.TxOr(ctx, pool).(*dbtxHandle))
		_, err := txnsql.Tx(ctx)
		assert.ErrorIs(t, err, txn.ErrNoTransaction, "Tx returns only a *sql.Tx")
		assert.ErrorContains(t, err, "ctx carries a *txnsql_test.dbtxHandle transaction")
		return nil
	}))
	assert.Same(t, pool, txnsql.TxOr(kept, pool).(*sql.DB), "a kept context carries no transaction")

	g := txn.New[*gormLike](foreignBackend[*gormLike]{mk: func() *gormLike { return &gormLike{} }})
	require.NoError(t, g.Run(ctx, func(ctx context.Context, _ *gormLike) error {
		defer func() {
			msg, _ := recover().(string)
			assert.Contains(t, msg, "txnsql.TxOr: ctx carries a transaction whose handle, *txnsql_test.gormLike, is not a txnsql.DBTX")
		}()
		got := txnsql.TxOr(ctx, pool)
		t.Errorf("TxOr returned %T inside a transaction it cannot join", got)
		return nil
	}))
}
