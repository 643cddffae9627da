package txnmysql_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/fakeclock"
)

// advanceStalls advances clk past every stall interval for as long as done
// has not delivered, and returns what it delivered: the stall escape admits
// a Run that waits on its own caller.
func advanceStalls(t *testing.T, clk *fakeclock.Clock, done <-chan error) error {
	t.Helper()
	limit := time.After(testTimeout)
	for {
		select {
		case err := <-done:
			return err
		case <-limit:
			require.FailNow(t, "the Run did not return")
		case <-time.After(time.Millisecond):
			if clk.Timers() > 0 {
				clk.Advance(time.Hour)
			}
		}
	}
}

// lockFree reports whether the named lock of key is free.
func lockFree(t *testing.T, db *sql.DB, key string) bool {
	t.Helper()
	var free sql.NullInt64
	require.NoError(t, db.QueryRow("SELECT IS_FREE_LOCK(?)", txnmysql.LockName(key)).Scan(&free))
	return free.Int64 == 1
}

// Guarantee 7 with DatabaseKeys: fn starts a Run on the same Runner with a
// fresh context (an audit row in its own transaction), naming the key its
// caller holds. The stall escape shares the key in the process, and the
// inner Run then must not wait in GET_LOCK for the named lock its own
// caller holds: it commits, then the caller does, and no lock is left.
func TestDatabaseKeysFreshRunInFnOnHeldKey(t *testing.T) {
	db := openDB(t, nil)
	tbl := createTable(t, db, "id VARCHAR(16) PRIMARY KEY")
	clk := fakeclock.New(time.Now())
	r := txnmysql.New(db, txn.DatabaseKeys(), txn.WithClock(clk))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES ('order')"); err != nil {
				return err
			}
			// A deadline of its own, shorter than the test's, so that
			// a wait on the caller fails the test instead of hanging it.
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Run(ictx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES ('audit')")
				return err
			}, txn.Keys("k", "other"))
		}, txn.Keys("k"), txn.MaxAttempts(1))
	}()
	require.NoError(t, advanceStalls(t, clk, done))
	assert.Equal(t, 2, count(t, db, tbl, "1=1"))
	assert.True(t, lockFree(t, db, "k"))
	assert.True(t, lockFree(t, db, "other"))
	assert.Zero(t, r.AdmissionStats().Keys)
}
