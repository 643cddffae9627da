package txnpgx_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
)

// sqlcDBTX is the interface sqlc generates for pgx/v5 (emit_methods_with_db_argument
// off, copyfrom and batch queries on).
type sqlcDBTX interface {
	Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
	Query(context.Context, string, ...interface{}) (pgx.Rows, error)
	QueryRow(context.Context, string, ...interface{}) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}

// queries stands for a sqlc-generated Queries.
type queries struct{ db sqlcDBTX }

func newQueries(db sqlcDBTX) *queries { return &queries{db: db} }

func (q *queries) insert(ctx context.Context, table string, id int) error {
	_, err := q.db.Exec(ctx, "INSERT INTO "+table+" (id, v) VALUES ($1, 0)", id)
	return err
}

var (
	_ txnpgx.DBTX = (*pgxpool.Pool)(nil)
	_ sqlcDBTX    = txnpgx.DBTX(nil)
)

func TestRepositoryHelperJoinsTheTransaction(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id int PRIMARY KEY, v int NOT NULL")
	ctx := testCtx(t)
	r := txnpgx.New(pool, txn.WithBackoff(txn.Constant(0)))
	count := func() int { return queryInt(t, pool, "SELECT count(*) FROM "+tbl) }

	attempts := 0
	err := r.Run(ctx, func(ctx context.Context, _ pgx.Tx) error {
		attempts++
		tx, err := txnpgx.Tx(ctx)
		if err != nil {
			return err
		}
		if err := newQueries(tx).insert(ctx, tbl, attempts); err != nil {
			return err
		}
		if attempts == 1 {
			return txn.Retry(errors.New("version check failed"))
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 2, attempts)
	assert.Equal(t, 1, count(), "the first attempt's row was rolled back with it")
	assert.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE id = 2"))

	// The innermost transaction: a row written in a savepoint that is rolled
	// back disappears, the outer row stays.
	err = r.Run(ctx, func(ctx context.Context, _ pgx.Tx) error {
		if err := newQueries(txnpgx.TxOr(ctx, pool)).insert(ctx, tbl, 10); err != nil {
			return err
		}
		spErr := txn.Savepoint(ctx, func(ctx context.Context, _ pgx.Tx) error {
			tx, err := txnpgx.Tx(ctx)
			if err != nil {
				return err
			}
			if err := newQueries(tx).insert(ctx, tbl, 11); err != nil {
				return err
			}
			return errors.New("undo the savepoint")
		})
		assert.EqualError(t, spErr, "undo the savepoint")
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE id IN (10, 11)"))

	// No transaction: Tx refuses, TxOr uses the pool (autocommit).
	_, err = txnpgx.Tx(ctx)
	assert.ErrorIs(t, err, txn.ErrNoTransaction)
	require.NoError(t, newQueries(txnpgx.TxOr(ctx, pool)).insert(ctx, tbl, 20))
	assert.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl+" WHERE id = 20"))
	//nolint:staticcheck // a nil context is the bad input under test
	_, err = txnpgx.Tx(nil) //lint:ignore SA1012 testing nil
	assert.ErrorIs(t, err, txn.ErrNilContext)
}

// A repository that requires the caller's transaction.
func ExampleTx() {
	var pool *pgxpool.Pool // pgxpool.New(ctx, dsn)
	r := txnpgx.New(pool)
	debit := func(ctx context.Context, id, amount int64) error {
		tx, err := txnpgx.Tx(ctx) // txn.ErrNoTransaction outside a Run
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amount, id)
		return err
	}
	_ = r.Run(context.Background(), func(ctx context.Context, _ pgx.Tx) error {
		return debit(ctx, 1, 10) // joins this transaction
	})
}

// A repository that runs in the caller's transaction if there is one, on the
// pool otherwise.
func ExampleTxOr() {
	var pool *pgxpool.Pool
	balance := func(ctx context.Context, id int64) (int64, error) {
		var b int64
		err := txnpgx.TxOr(ctx, pool).QueryRow(ctx, "SELECT balance FROM accounts WHERE id = $1", id).Scan(&b)
		return b, err
	}
	_, _ = balance(context.Background(), 1)
}

// sqlTxBackend hands out *sql.Tx handles, as a database/sql Runner does.
type sqlTxBackend struct{}

func (sqlTxBackend) Begin(context.Context, []txn.BeginOption[*sql.Tx]) (*sql.Tx, error) {
	return new(sql.Tx), nil
}
func (sqlTxBackend) Commit(context.Context, *sql.Tx) error   { return nil }
func (sqlTxBackend) Rollback(context.Context, *sql.Tx) error { return nil }
func (sqlTxBackend) Classify(error) txn.Class                { return txn.ClassPermanent }

// TestTxOrRefusesAForeignTransaction: inside a Run whose handle is not a
// pgx DBTX (here a database/sql Runner's *sql.Tx), TxOr panics rather than
// hand out the pool, whose statements would commit outside that
// transaction.
func TestTxOrRefusesAForeignTransaction(t *testing.T) {
	var pool *pgxpool.Pool
	r := txn.New[*sql.Tx](sqlTxBackend{})
	require.NoError(t, r.Run(context.Background(), func(ctx context.Context, _ *sql.Tx) error {
		defer func() {
			msg, _ := recover().(string)
			assert.Contains(t, msg, "txnpgx.TxOr: ctx carries a transaction whose handle, *sql.Tx, is not a txnpgx.DBTX")
		}()
		got := txnpgx.TxOr(ctx, pool)
		t.Errorf("TxOr returned %T inside a transaction it cannot join", got)
		return nil
	}))
}
