package txnpgx_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
)

// TestStatementAfterSwallowedConflictFindsTxClosed: a nested Run loses a
// real serialization failure (40001) and fn ignores it: Run has rolled the
// whole transaction back at once, so fn's next statement fails with
// pgx.ErrTxClosed and nothing of the attempt commits.
func TestStatementAfterSwallowedConflictFindsTxClosed(t *testing.T) {
	pool := newPool(t, nil)
	tbl := counterTable(t, pool)
	logTbl := newTable(t, pool, "entry text PRIMARY KEY")
	r := txnpgx.New(pool).WithBegin(repeatableRead())
	attempts := 0
	var nestedErrs, afterErrs []error
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		attempts++
		n := attempts
		if _, err := tx.Exec(ctx, "INSERT INTO "+logTbl+" VALUES ($1)", []string{"", "1:before", "2:before"}[n]); err != nil {
			return err
		}
		if n == 1 {
			concurrentUpdate(t, pool, tbl, 1)
		}
		nerr := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE "+tbl+" SET v = v + 1 WHERE id = 1")
			return err
		})
		nestedErrs = append(nestedErrs, nerr)
		_, aerr := tx.Exec(ctx, "INSERT INTO "+logTbl+" VALUES ($1)", []string{"", "1:after", "2:after"}[n])
		afterErrs = append(afterErrs, aerr)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	assert.Equal(t, "40001", sqlState(nestedErrs[0]))
	assert.ErrorIs(t, afterErrs[0], pgx.ErrTxClosed)
	assert.NoError(t, afterErrs[1])
	assert.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+logTbl))
	assert.Equal(t, 0, queryInt(t, pool, "SELECT count(*) FROM "+logTbl+" WHERE entry LIKE '1:%'"))
}

// TestRunInOnCommitStartsNewTransaction: a Run started from an OnCommit
// callback with fn's context starts a new transaction of its own; the
// ended one is unreachable through that context.
func TestRunInOnCommitStartsNewTransaction(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "name text PRIMARY KEY")
	r := txnpgx.New(pool)
	var txFromOK bool
	var onCommitErr, savepointErr, runErr error
	err := r.Run(testCtx(t), func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('order')"); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() {
			_, txFromOK = txn.TxFrom[pgx.Tx](ctx)
			onCommitErr = txn.OnCommit(ctx, func() {})
			savepointErr = txn.Savepoint(ctx, func(context.Context, pgx.Tx) error { return nil })
			runErr = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('audit')")
				return err
			})
		})
	})
	require.NoError(t, err)
	assert.False(t, txFromOK)
	assert.ErrorIs(t, onCommitErr, txn.ErrNoTransaction)
	assert.ErrorIs(t, savepointErr, txn.ErrNoTransaction)
	require.NoError(t, runErr)
	assert.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
}

// TestFnThatCommitsIsNeverRerun: fn commits the transaction itself and
// returns an error asking for a retry (or nil, or with the context ending
// at the same moment): Run returns ErrFnFinishedTx and fn ran once.
func TestFnThatCommitsIsNeverRerun(t *testing.T) {
	pool := newPool(t, nil)
	for _, tc := range []struct {
		name   string
		ret    error
		cancel bool
	}{
		{"Retry", txn.Retry(errors.New("version check failed")), false},
		{"40001 from the server", nil, false},
		{"Retry and context ends", txn.Retry(errors.New("version check failed")), true},
		{"nil and context ends", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := newTable(t, pool, "id serial PRIMARY KEY")
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			calls := 0
			err := txnpgx.New(pool).Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
				calls++
				if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" DEFAULT VALUES"); err != nil {
					return err
				}
				if err := tx.Commit(ctx); err != nil {
					return txn.Permanent(err)
				}
				if tc.cancel {
					cancel()
				}
				if tc.name == "40001 from the server" {
					// A PgError with SQLSTATE 40001, which Classify
					// retries, raised by the server.
					_, err := pool.Exec(ctx, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'raised'; END $$")
					require.Equal(t, "40001", sqlState(err))
					return err
				}
				return tc.ret
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
			assert.Equal(t, 1, calls)
			assert.Equal(t, 1, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
		})
	}
}
