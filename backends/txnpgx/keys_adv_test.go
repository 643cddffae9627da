package txnpgx_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/fakeclock"
)

// advanceStalls advances clk past every stall interval for as long as done
// has not delivered, and returns what it delivered: the stall escape admits
// a Run that waits on its own caller. It gives up after waitLimit.
func advanceStalls(t *testing.T, clk *fakeclock.Clock, done <-chan error) error {
	t.Helper()
	limit := time.After(waitLimit)
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

// Guarantee 7 with DatabaseKeys: fn starts a Run on the same Runner with a
// fresh context (an audit row in its own transaction), naming the key its
// caller holds. The stall escape shares the key in the process, and the
// inner Run then must not wait in the database for the advisory lock its
// own caller holds: it commits, then the caller does, and no lock is left.
func TestDatabaseKeysFreshRunInFnOnHeldKey(t *testing.T) {
	pool := newPool(t, nil)
	tbl := newTable(t, pool, "id text PRIMARY KEY")
	clk := fakeclock.New(time.Now())
	r := txnpgx.New(pool, txn.DatabaseKeys(), txn.WithClock(clk))
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('order')"); err != nil {
				return err
			}
			// A deadline of its own, shorter than the test's, so that
			// a wait on the caller fails the test instead of hanging it.
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Run(ictx, func(ctx context.Context, tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ('audit')")
				return err
			}, txn.Keys("k", "other"))
		}, txn.Keys("k"), txn.MaxAttempts(1))
	}()
	require.NoError(t, advanceStalls(t, clk, done))
	assert.Equal(t, 2, queryInt(t, pool, "SELECT count(*) FROM "+tbl))
	assert.Zero(t, advisoryLocks(t, pool))
	assert.Zero(t, r.AdmissionStats().Keys)
}
