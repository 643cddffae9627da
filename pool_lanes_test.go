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

// pooledDB is the fake database behind a pool of size connections: it
// reports the size (txn.PoolSizer), and Begin can be made to block, as an
// exhausted pool blocks, or to fail, as a pool whose acquire timed out.
type pooledDB struct {
	*fakedb.DB
	size  int
	clock *fakeclock.Clock
	// poolWait, when not zero, is how long each Begin "waits for a
	// connection": the fake clock is advanced by that much.
	poolWait time.Duration
}

func (p *pooledDB) PoolSize() int { return p.size }

func (p *pooledDB) Begin(ctx context.Context, opts []txn.BeginOption[*fakedb.Tx]) (*fakedb.Tx, error) {
	if p.poolWait > 0 {
		p.clock.Advance(p.poolWait)
	}
	return p.DB.Begin(ctx, opts)
}

// pooledRunner returns a Runner over a pooledDB of size connections whose
// limits start open (at their ceilings), with zero backoff and a fake
// clock; slowStartRunner is the same in slow start, the default.
func pooledRunner(t *testing.T, size int, opts ...txn.RunnerOption) (*pooledDB, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	return slowStartRunner(t, size, append([]txn.RunnerOption{txn.StartOpen()}, opts...)...)
}

func slowStartRunner(t *testing.T, size int, opts ...txn.RunnerOption) (*pooledDB, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	clk := fakeclock.New(time.Now())
	db := &pooledDB{DB: fakedb.New(), size: size, clock: clk}
	base := []txn.RunnerOption{txn.WithClock(clk), txn.WithBackoff(txn.Constant(0)), txn.MaxAttempts(0)}
	r := txn.New[*fakedb.Tx](db, append(base, opts...)...)
	require.NoError(t, r.Err())
	return db, r
}

func TestPoolSizeSetsCeiling(t *testing.T) {
	_, r := slowStartRunner(t, 20)
	st := r.AdmissionStats()
	assert.Equal(t, 20, st.Ceiling, "the ceiling is the pool's size")
	assert.Equal(t, 5, st.RetryCeiling, "the retry lane is a quarter of the pool")

	_, r = slowStartRunner(t, 20, txn.Adaptive(8))
	assert.Equal(t, 8, r.AdmissionStats().Ceiling, "a smaller ceiling given with Adaptive wins")

	_, r = slowStartRunner(t, 0)
	assert.Equal(t, txn.DefaultAdaptiveMax, r.AdmissionStats().Ceiling, "an unbounded pool leaves the default ceiling")

	_, r = slowStartRunner(t, 1)
	st = r.AdmissionStats()
	assert.Equal(t, 1, st.Ceiling)
	assert.Equal(t, 1, st.RetryCeiling)
	assert.Equal(t, 1, st.Limit)
	assert.Equal(t, 1, st.RetryLimit)
}

// Slow start: the limit starts at 1 and every clean commit raises it by
// one, so that it doubles every generation of attempts until the ceiling.
func TestSlowStartDoublesToCeiling(t *testing.T) {
	_, r := slowStartRunner(t, 20)
	require.Equal(t, 1, r.AdmissionStats().Limit)
	var levels []int
	for r.AdmissionStats().Limit < 20 {
		k := r.AdmissionStats().Limit
		levels = append(levels, k)
		sideBySide(t, r, repeat(nil, k), txn.MaxAttempts(1))
		require.Less(t, len(levels), 10, "slow start never reached the ceiling: %v", levels)
	}
	assert.Equal(t, []int{1, 2, 4, 8, 16}, levels, "the limit per generation")
	assert.Equal(t, 20, r.AdmissionStats().Limit)
}

// The first conflict ends slow start: from then on the limit is cut and
// grows back additively.
func TestSlowStartEndsAtFirstConflict(t *testing.T) {
	_, r := slowStartRunner(t, 64)
	sideBySide(t, r, repeat(nil, 1), txn.MaxAttempts(1))
	sideBySide(t, r, repeat(nil, 2), txn.MaxAttempts(1))
	sideBySide(t, r, repeat(nil, 4), txn.MaxAttempts(1))
	require.Equal(t, 8, r.AdmissionStats().Limit)
	sideBySide(t, r, append([]error{errConflict}, repeat(nil, 7)...), txn.MaxAttempts(1))
	// The conflict came first and cut 8 by F/2 = 1/32; the seven clean
	// commits that followed then gained about one level between them
	// (still in slow start they would have gained seven).
	after := r.AdmissionStats().Limit
	assert.LessOrEqual(t, after, 8, "slow start went on after the conflict")
	// Another generation of clean commits gains at most one level, not a
	// doubling.
	sideBySide(t, r, repeat(nil, after), txn.MaxAttempts(1))
	assert.LessOrEqual(t, r.AdmissionStats().Limit, after+1)
}

func TestPoolSizedRunnerQueuesInsteadOfPool(t *testing.T) {
	checkNoLeak(t)
	_, r := pooledRunner(t, 4)
	release := make(chan struct{})
	holders := inside(t, r, 4, release, func() error { return nil })
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }) }()
	waitFor(t, func() bool { return r.AdmissionStats().Queued == 1 })
	assert.Equal(t, 4, r.AdmissionStats().InFlight, "the fifth attempt waits in the Runner, not for a connection")
	close(release)
	holders.Wait()
	require.NoError(t, <-errc)
}

// A BEGIN that fails with a retryable error (the pool's acquire timed out,
// the connection broke) is not a conflict: the limit stays where it was.
func TestBeginFailureIsNotAConflict(t *testing.T) {
	db, r := pooledRunner(t, 8)
	poolTimeout := fakedb.Err(txn.ClassRetryable, "acquire: timed out waiting for a connection")
	for i := 0; i < 20; i++ {
		db.FailBegin(poolTimeout)
		require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	}
	assert.Equal(t, 8, r.AdmissionStats().Limit)
}

// A conflict is weighed by the attempt's time from BEGIN on, so that a long
// wait for a pooled connection does not make a quick conflict look like a
// deadlock that cost a second: the same conflicts after the same history
// cut the limit the same, whatever the wait before BEGIN.
func TestPoolWaitNotCountedAsAttemptTime(t *testing.T) {
	limitAfter := func(poolWait time.Duration) int {
		db, r := pooledRunner(t, 16)
		// Rounds of 8 attempts side by side, all committing, each taking
		// no time from BEGIN on; the first conflicts, to end the calm in
		// which nothing is measured.
		sideBySide(t, r, append([]error{errConflict}, repeat(nil, 7)...), txn.MaxAttempts(1))
		for i := 0; i < 8; i++ {
			sideBySide(t, r, repeat(nil, 8), txn.MaxAttempts(1))
		}
		// Now every BEGIN waits poolWait for a connection, and one attempt
		// of 8 conflicts.
		db.poolWait = poolWait
		sideBySide(t, r, append([]error{errConflict}, repeat(nil, 7)...), txn.MaxAttempts(1))
		return r.AdmissionStats().Limit
	}
	noWait := limitAfter(0)
	assert.Equal(t, noWait, limitAfter(time.Second), "a second spent waiting for a connection changed the cut")
	assert.GreaterOrEqual(t, noWait, 7, "one quick conflict in eight should cost little")
}

// Retries of Runs that conflicted pass the narrow retry lane, so that a
// pile of Runs retrying on a hot row cannot take every slot of the main
// lane: a disjoint Run is admitted at once while they retry.
func TestRetryLaneIsolatesHotSpot(t *testing.T) {
	checkNoLeak(t)
	_, r := pooledRunner(t, 8)
	require.Equal(t, 2, r.AdmissionStats().RetryLimit)

	// Six hot Runs whose first attempts run side by side and conflict, and
	// whose retries then hold on (a hot row's lock waits) until released.
	hot := 6
	var firstIn, done sync.WaitGroup
	firstIn.Add(hot)
	done.Add(hot)
	allIn := make(chan struct{})
	releaseRetries := make(chan struct{})
	for i := 0; i < hot; i++ {
		go func() {
			defer done.Done()
			attempt := 0
			assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
				attempt++
				if attempt == 1 {
					firstIn.Done()
					<-allIn
					return errConflict
				}
				<-releaseRetries
				return nil
			}))
		}()
	}
	firstIn.Wait()
	close(allIn)
	waitFor(t, func() bool {
		st := r.AdmissionStats()
		return st.RetryInFlight == 2 && st.RetryQueued == hot-2 && st.InFlight == 2
	})
	st := r.AdmissionStats()
	require.Greater(t, st.Limit, st.InFlight, "the main lane has room: %+v", st)

	// A cold Run commits while the hot retries hold their slots.
	require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	st = r.AdmissionStats()
	assert.Equal(t, 2, st.InFlight, "only the retry lane's two retries hold main slots")

	close(releaseRetries)
	done.Wait()
	st = r.AdmissionStats()
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.RetryInFlight)
	assert.Zero(t, st.RetryQueued)
}

// A retry that holds its retry-lane slot and waits for the main lane gives
// the retry slot back when its context ends.
func TestRetryLaneSlotReleasedWhenMainWaitEnds(t *testing.T) {
	checkNoLeak(t)
	_, r := pooledRunner(t, 2)
	require.Equal(t, 1, r.AdmissionStats().RetryLimit)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sIn, sGo := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- r.Run(ctx, func(context.Context, *fakedb.Tx) error {
			close(sIn)
			<-sGo
			return errConflict
		})
	}()
	<-sIn
	// A blocker takes the other main slot; the conflict then cuts the
	// limit to one, so the retry waits for the main lane.
	release := make(chan struct{})
	blocker := inside(t, r, 1, release, func() error { return nil })
	close(sGo)
	waitFor(t, func() bool {
		st := r.AdmissionStats()
		return st.Queued == 1 && st.RetryInFlight == 1
	})
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	st := r.AdmissionStats()
	assert.Zero(t, st.RetryInFlight, "the retry slot was given back")
	assert.Zero(t, st.Queued)
	close(release)
	blocker.Wait()
}

// A retry that passed the retry lane waits in the main lane ahead of first
// attempts that queued before it: a conflict does not send a Run to the
// back of the queue.
func TestRetryWaitsAheadOfFirstAttempts(t *testing.T) {
	checkNoLeak(t)
	_, r := pooledRunner(t, 2)
	var mu sync.Mutex
	var order []string
	proceed := make(chan struct{})
	enter := func(name string) {
		mu.Lock()
		order = append(order, name)
		mu.Unlock()
		<-proceed
	}
	rIn, rGo := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		attempt := 0
		assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
			attempt++
			if attempt == 1 {
				close(rIn)
				<-rGo
				return errConflict
			}
			enter("retry")
			return nil
		}))
	}()
	<-rIn
	release := make(chan struct{})
	holder := inside(t, r, 1, release, func() error { return nil })
	for _, name := range []string{"first-1", "first-2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
				enter(name)
				return nil
			}))
		}()
		want := 1
		if name == "first-2" {
			want = 2
		}
		waitFor(t, func() bool { return r.AdmissionStats().Queued == want })
	}
	// The conflict cuts the limit to one, held by the holder: the retry
	// passes the retry lane and queues in the main lane, after first-1 and
	// first-2 but ahead of them.
	close(rGo)
	waitFor(t, func() bool {
		st := r.AdmissionStats()
		return st.RetryInFlight == 1 && st.Queued == 3
	})
	// The holder's commit raises the limit to two: the retry and first-1
	// are admitted, first-2 waits for one of them.
	close(release)
	holder.Wait()
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 2
	})
	mu.Lock()
	assert.ElementsMatch(t, []string{"retry", "first-1"}, order, "admitted first")
	mu.Unlock()
	assert.Equal(t, 1, r.AdmissionStats().Queued, "first-2 still waits")
	close(proceed)
	wg.Wait()
}

// Many Runs through both lanes, with conflicts on first attempts and
// retries and callers giving up while they wait: every Run returns and
// nothing stays admitted or queued in either lane.
func TestLanesUnderLoadLeaveNothingBehind(t *testing.T) {
	checkNoLeak(t)
	for _, size := range []int{1, 2, 8} {
		_, r := slowStartRunner(t, size)
		var wg sync.WaitGroup
		for g := 0; g < 24; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := newRand(uint64(g + 1))
				for i := 0; i < 60; i++ {
					ctx, cancel := context.WithCancel(context.Background())
					giveUp := rng.IntN(8) == 0
					attempt := 0
					err := r.Run(ctx, func(context.Context, *fakedb.Tx) error {
						attempt++
						if giveUp && attempt == 2 {
							// The caller leaves while others wait.
							cancel()
						}
						if attempt < 4 && rng.IntN(3) == 0 {
							return errConflict
						}
						return nil
					})
					cancel()
					if err != nil {
						assert.ErrorIs(t, err, context.Canceled)
					}
				}
			}()
		}
		wg.Wait()
		st := r.AdmissionStats()
		assert.Zero(t, st.InFlight, "size %d", size)
		assert.Zero(t, st.Queued, "size %d", size)
		assert.Zero(t, st.RetryInFlight, "size %d", size)
		assert.Zero(t, st.RetryQueued, "size %d", size)
	}
}
