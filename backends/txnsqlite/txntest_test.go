package txnsqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/txntest"
)

// probing is an Interceptor that runs probe before the BEGIN of every
// attempt after the first, then defers to the Faults.
type probing struct {
	*txntest.Faults
	mu     sync.Mutex
	probe  func(attempt int) error
	probed int
}

func (p *probing) Intercept(ctx context.Context, at txn.InterceptPoint, attempt int) error {
	if at == txn.InterceptBegin && attempt > 1 {
		if err := p.probe(attempt); err != nil {
			return txn.Permanent(err)
		}
		p.mu.Lock()
		p.probed++
		p.mu.Unlock()
	}
	return p.Faults.Intercept(ctx, at, attempt)
}

// A fault forced before COMMIT or at COMMIT rolls back on SQLite what fn,
// a nested Run (a savepoint) and txn.Savepoint wrote: before the retry
// begins, another connection can write the same keys without waiting for the
// write lock, and after it only the retry's rows exist.
func TestTxntestForcedFailureRollsBackOnServer(t *testing.T) {
	for _, at := range []txn.InterceptPoint{txn.InterceptBeforeCommit, txn.InterceptCommit} {
		t.Run(at.String(), func(t *testing.T) {
			ctx := ctxT(t)
			db, tbl := sqliteTable(t, "id INT PRIMARY KEY, attempt INT NOT NULL")
			r := txnsqlite.New(db, txn.WithBackoff(txn.Constant(0)))

			in := &probing{Faults: txntest.Fail(at, 1), probe: func(int) error {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if n := count(t, db, tbl, ""); n != 0 {
					return fmt.Errorf("%d rows of the failed attempt are visible", n)
				}
				if _, err := db.ExecContext(pctx, "INSERT INTO "+tbl+" VALUES (1, 0), (2, 0), (3, 0)"); err != nil {
					return fmt.Errorf("probe insert: %w", err)
				}
				_, err := db.ExecContext(pctx, "DELETE FROM "+tbl)
				return err
			}}
			rec := &txntest.Recorder{}
			calls := 0
			err := r.WithInterceptor(in).Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
				calls++
				n := calls
				if _, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, ?)", n); err != nil {
					return err
				}
				if err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (2, ?)", n)
					return err
				}); err != nil {
					return err
				}
				if err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (3, ?)", n)
					return err
				}); err != nil {
					return err
				}
				var inTx int
				if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tbl).Scan(&inTx); err != nil {
					return err
				}
				assert.Equal(t, 3, inTx, "the statements ran in the database")
				return nil
			}, txn.WithObserver(rec))
			require.NoError(t, err)
			assert.Equal(t, 2, calls)
			assert.Equal(t, 1, in.probed)
			assert.Equal(t, 3, count(t, db, tbl, "attempt = 2"))
			assert.Equal(t, 3, count(t, db, tbl, ""))
			assert.Equal(t, "attempt 1, retry retryable, attempt 2, committed", rec.String())
		})
	}
}

// A fault after a real COMMIT surfaces as ErrCommitUnknown and does not
// run fn again, although the work is committed; an Idempotent call runs fn
// again.
func TestTxntestUnknownCommitOutcome(t *testing.T) {
	ctx := ctxT(t)
	db, tbl := sqliteTable(t, "id INT PRIMARY KEY, v INT NOT NULL, runs INT NOT NULL")
	_, err := db.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1, 0, 0)")
	require.NoError(t, err)
	faulty := txnsqlite.New(db, txn.WithBackoff(txn.Constant(0))).WithInterceptor(txntest.Fail(txn.InterceptAfterCommit, 1))
	calls := 0
	set7 := func(ctx context.Context, tx *sql.Tx) error {
		calls++
		_, err := tx.ExecContext(ctx, "UPDATE "+tbl+" SET v = 7, runs = runs + 1 WHERE id = 1")
		return err
	}

	rec := &txntest.Recorder{}
	err = faulty.Run(ctx, set7, txn.WithObserver(rec))
	require.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.Equal(t, 1, calls, "fn is not run again")
	assert.Equal(t, 1, count(t, db, tbl, "runs = 1"), "the COMMIT really happened")
	assert.Equal(t, "attempt 1, gave up ambiguous", rec.String())

	calls = 0
	rec.Reset()
	require.NoError(t, faulty.Run(ctx, set7, txn.Idempotent(), txn.WithObserver(rec)))
	assert.Equal(t, 2, calls, "an Idempotent call runs fn again")
	assert.Equal(t, 1, count(t, db, tbl, "runs = 3 AND v = 7"), "both attempts committed")
	assert.Equal(t, []txn.Class{txn.ClassAmbiguous}, rec.Classes())
}

// CheckRerun on SQLite: a counter bumped inside fn fails the check, the
// same bump in OnCommit passes.
func TestTxntestCheckRerun(t *testing.T) {
	db, tbl := sqliteTable(t, "id INT PRIMARY KEY")
	r := txnsqlite.New(db, txn.WithBackoff(txn.Constant(0)))
	orders := 0
	type state struct{ Rows, Orders int }
	report := func(context.Context) state { return state{count(t, db, tbl, ""), orders} }
	reset := txntest.Reset(func(ctx context.Context) error {
		orders = 0
		_, err := db.ExecContext(ctx, "DELETE FROM "+tbl)
		return err
	})
	insert := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (1)")
		return err
	}
	buggy := func(ctx context.Context, tx *sql.Tx) error {
		orders++
		return insert(ctx, tx)
	}
	fixed := func(ctx context.Context, tx *sql.Tx) error {
		if err := insert(ctx, tx); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() { orders++ })
	}
	err := txntest.Rerun(ctxT(t), r, buggy, report, reset)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "after attempt 1 failed before COMMIT and attempt 2 committed, report returned {Rows:1 Orders:2}; after a single attempt it returned {Rows:1 Orders:1}")
	txntest.CheckRerun(t, r, fixed, report, reset, txntest.Retries(3),
		txntest.At(txn.InterceptBegin, txn.InterceptBeforeCommit, txn.InterceptCommit))
}

// sqliteTable opens a WAL database file with txnsqlite.Open (BEGIN
// IMMEDIATE, busy_timeout 5 s) and creates the table txnsqlite_txntest
// with columns in it.
func sqliteTable(t *testing.T, columns string) (*sql.DB, string) {
	t.Helper()
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "txntest.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	const tbl = "txnsqlite_txntest"
	_, err = db.Exec("CREATE TABLE " + tbl + " (" + columns + ")")
	require.NoError(t, err)
	return db, tbl
}

// count returns SELECT COUNT(*) FROM table WHERE where (where may be "").
func count(t testing.TB, db *sql.DB, table, where string) int {
	t.Helper()
	q := "SELECT COUNT(*) FROM " + table
	if where != "" {
		q += " WHERE " + where
	}
	var n int
	require.NoError(t, db.QueryRow(q).Scan(&n))
	return n
}
