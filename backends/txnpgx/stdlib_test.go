package txnpgx_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsql"
)

// TestStdlibClassifier uses txnpgx.Classify with database/sql, through
// pgx's stdlib driver and backends/txnsql: a real 40001 under REPEATABLE
// READ is retried, and a unique violation is permanent and comes back as a
// *pgconn.PgError.
func TestStdlibClassifier(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()

	rec := &recorder{}
	r := txnsql.New(db, txn.WithClassifier(txnpgx.Classify), txn.WithObserver(rec)).
		WithBegin(txnsql.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead}))
	ctx := testCtx(t)
	var attempts int
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		attempts++
		var v int
		if err := tx.QueryRowContext(ctx, "SELECT v FROM "+tbl+" WHERE id = 1").Scan(&v); err != nil {
			return err
		}
		if attempts == 1 {
			concurrentUpdate(t, pool, tbl, 1)
		}
		_, err := tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	require.Equal(t, []string{"40001"}, rec.retryCodes())
	require.Equal(t, 101, queryInt(t, pool, "SELECT v FROM "+tbl+" WHERE id = 1"))

	attempts = 0
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		attempts++
		_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 0)")
		return err
	})
	requireRanOnceWithCode(t, attempts, err, "23505")

	// Savepoints through txnsql's SAVEPOINT statements work the same way.
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		spErr := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 0)")
			return err
		})
		require.Equal(t, "23505", sqlState(spErr))
		_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (2, 0)")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
}
