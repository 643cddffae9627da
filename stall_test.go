package txn_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

// Issue 11, item 7: a Run started inside fn with a fresh context, on the
// default Runner whose limit contention cut to 1, is admitted once nothing
// was released for the stall interval, instead of waiting for the slot its
// own caller holds.
func TestNestedFreshRunDoesNotHangOnItsCaller(t *testing.T) {
	for _, tc := range []struct {
		name   string
		runner []txn.RunnerOption
		opts   []txn.CallOption
	}{
		{"adaptive limit", nil, nil},
		{"conflict key", []txn.RunnerOption{txn.NoAdaptive()}, []txn.CallOption{txn.Keys("k")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			db := fakedb.New()
			clk := fakeclock.New(time.Now())
			r := txn.New[*fakedb.Tx](db, append([]txn.RunnerOption{txn.WithClock(clk), txn.WithBackoff(txn.Constant(0))}, tc.runner...)...)
			require.NoError(t, r.Err())
			if tc.opts == nil {
				shrinkToOne(t, r)
			}

			queued := func() bool {
				return r.AdmissionStats().Queued == 1 || txn.KeyWaiters(r, "k") == 1
			}
			done := make(chan error, 1)
			go func() {
				done <- r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					tx.Write("order")
					// An audit row in its own transaction: a fresh context.
					return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
						tx.Write("audit")
						return nil
					}, tc.opts...)
				}, tc.opts...)
			}()
			waitFor(t, queued)
			// Just short of the stall interval nothing happens.
			clk.Advance(txn.StallFloor - time.Nanosecond)
			assert.True(t, queued(), "still queued before the stall interval")
			select {
			case err := <-done:
				require.FailNow(t, "returned before the stall interval", "%v", err)
			default:
			}
			clk.Advance(time.Nanosecond)
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(time.Minute):
				require.FailNow(t, "the nested fresh Run was not admitted after the stall interval")
			}
			assert.Equal(t, 1, db.Committed("order"))
			assert.Equal(t, 1, db.Committed("audit"))
			assert.Zero(t, r.AdmissionStats().InFlight)
			assert.Zero(t, r.AdmissionStats().Keys)
			assert.Zero(t, clk.Timers(), "no stall timer left behind")
		})
	}
}

// The stall escape admits only when nothing moved: a queue that drains by
// releases never admits over the limit.
func TestStallEscapeWaitsForProgressToStop(t *testing.T) {
	checkNoLeak(t)
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.WithBackoff(txn.Constant(0)), txn.Adaptive(1))
	require.NoError(t, r.Err())

	release := make(chan struct{})
	holder := inside(t, r, 1, release, func() error { return nil })
	var maxInFlight int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
				mu.Lock()
				maxInFlight = max(maxInFlight, r.AdmissionStats().InFlight)
				mu.Unlock()
				return nil
			}))
		}()
		waitFor(t, func() bool { return r.AdmissionStats().Queued == i+1 })
	}
	clk.Advance(txn.StallFloor / 2)
	close(release)
	holder.Wait()
	wg.Wait()
	clk.Advance(txn.StallFloor)
	assert.Equal(t, 1, maxInFlight, "never over the limit while attempts were released")
	assert.Zero(t, clk.Timers())
}

// Two attempts that wait out PostgreSQL's deadlock_timeout (1 s by
// default) hold their slots with nothing released meanwhile; that pause is
// the database's own, and the stall escape must not admit the queue into
// the rows they are stuck on.
func TestDeadlockTimeoutIsNotAStall(t *testing.T) {
	checkNoLeak(t)
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.WithBackoff(txn.Constant(0)), txn.Adaptive(2))
	require.NoError(t, r.Err())
	const deadlockTimeout = time.Second
	// Slow start: a commit opens the limit to its ceiling of 2.
	require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	require.Equal(t, 2, r.AdmissionStats().Limit)

	release := make(chan struct{})
	holders := inside(t, r, 2, release, func() error { return nil })
	var waiters sync.WaitGroup
	for i := 0; i < 3; i++ {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
		}()
	}
	waitFor(t, func() bool { return r.AdmissionStats().Queued == 3 })
	// Just short of twice deadlock_timeout, in small steps, as the waits of
	// two successive deadlocks with nothing released in between.
	step := 2 * deadlockTimeout / 20
	for i := 1; i <= 20; i++ {
		d := step
		if i == 20 {
			d -= time.Nanosecond
		}
		clk.Advance(d)
		assert.Equal(t, 2, r.AdmissionStats().InFlight, "admitted over the limit after %v", time.Duration(i)*step)
	}
	close(release)
	holders.Wait()
	waiters.Wait()
	clk.Advance(txn.StallFloor)
	assert.Zero(t, clk.Timers())
}
