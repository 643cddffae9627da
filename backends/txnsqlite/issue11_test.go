package txnsqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/integrationtest"
)

// openTable opens a fresh database file with txnsqlite.Open and creates
// table t (name TEXT PRIMARY KEY) in it.
func openTable(t *testing.T) *sql.DB {
	t.Helper()
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "issue11.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.Exec("CREATE TABLE t (name TEXT PRIMARY KEY)")
	require.NoError(t, err)
	return db
}

func insert(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?)", name)
	return err
}

func rows(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rs, err := db.Query("SELECT name FROM t ORDER BY name")
	require.NoError(t, err)
	defer rs.Close()
	var out []string
	for rs.Next() {
		var s string
		require.NoError(t, rs.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rs.Err())
	return out
}

// TestRunInOnCommitStartsNewTransaction: a Run started from an OnCommit
// callback with fn's context starts a new transaction of its own; the
// ended one is unreachable through that context.
func TestRunInOnCommitStartsNewTransaction(t *testing.T) {
	db := openTable(t)
	r := txnsqlite.New(db)
	var txFromOK bool
	var onCommitErr, savepointErr, runErr error
	err := r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		if err := insert(ctx, tx, "order"); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() {
			_, txFromOK = txn.TxFrom[*sql.Tx](ctx)
			onCommitErr = txn.OnCommit(ctx, func() {})
			savepointErr = txn.Savepoint(ctx, func(context.Context, *sql.Tx) error { return nil })
			runErr = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "audit") })
		})
	})
	require.NoError(t, err)
	assert.False(t, txFromOK)
	assert.ErrorIs(t, onCommitErr, txn.ErrNoTransaction)
	assert.ErrorIs(t, savepointErr, txn.ErrNoTransaction)
	require.NoError(t, runErr)
	assert.Equal(t, []string{"audit", "order"}, rows(t, db))
}

// TestFnThatCommitsIsNeverRerun: fn commits the transaction itself; see
// integrationtest.FnThatCommitsIsNeverRerun.
func TestFnThatCommitsIsNeverRerun(t *testing.T) {
	integrationtest.FnThatCommitsIsNeverRerun(t, sqliteDB(t), "txnsqlite", (*sql.Tx).Commit)
}

// TestNestedFreshRunOnDefaultRunner: on the default Runner, once a
// conflict has cut the adaptive limit to 1, a Run started inside fn with a
// fresh context (an audit row in its own transaction) used to wait for the
// slot its own caller held. It is admitted after the stall interval and
// both commit. The outer transaction only reads (Deferred), so that in WAL
// mode SQLite lets the inner one write beside it.
func TestNestedFreshRunOnDefaultRunner(t *testing.T) {
	db := openTable(t)
	r := txnsqlite.New(db)
	err := r.Run(ctxT(t), func(context.Context, *sql.Tx) error {
		return txn.Retry(errors.New("lost a race"))
	}, txn.MaxAttempts(1))
	require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	require.Equal(t, 1, r.AdmissionStats().Limit)

	var innerErr error
	err = r.WithBegin(txnsqlite.Deferred()).Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			return err
		}
		// A bound for the failure case only: before the stall escape
		// the inner Run waited here until this deadline.
		fresh, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		innerErr = r.Run(fresh, func(ctx context.Context, tx *sql.Tx) error { return insert(ctx, tx, "audit") })
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, innerErr)
	assert.Equal(t, []string{"audit"}, rows(t, db))
	assert.Zero(t, r.AdmissionStats().InFlight)
}

// TestStatementAfterSwallowedRetryFindsTxDone: a nested Run fails with a
// retryable error and fn ignores it: Run has rolled the transaction back at
// once, so fn's next statement fails with sql.ErrTxDone, and only the
// retried attempt's rows are committed.
func TestStatementAfterSwallowedRetryFindsTxDone(t *testing.T) {
	db := openTable(t)
	r := txnsqlite.New(db)
	attempt := 0
	var afterErrs []error
	err := r.Run(ctxT(t), func(ctx context.Context, tx *sql.Tx) error {
		attempt++
		n := attempt
		if err := insert(ctx, tx, []string{"", "1:before", "2:before"}[n]); err != nil {
			return err
		}
		_ = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if n == 1 {
				return txn.Retry(errors.New("lost a race"))
			}
			return nil
		})
		afterErrs = append(afterErrs, insert(ctx, tx, []string{"", "1:after", "2:after"}[n]))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempt)
	assert.ErrorIs(t, afterErrs[0], sql.ErrTxDone)
	assert.NoError(t, afterErrs[1])
	assert.Equal(t, []string{"2:after", "2:before"}, rows(t, db))
}
