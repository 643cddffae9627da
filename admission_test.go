package txn_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

// admissionRunner returns a Runner with adaptive control starting open (at
// its ceiling, not in slow start), zero backoff and a fake clock.
func admissionRunner(t *testing.T, opts ...txn.RunnerOption) (*fakedb.DB, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	db := fakedb.New()
	base := []txn.RunnerOption{txn.WithClock(fakeclock.New(time.Now())), txn.WithBackoff(txn.Constant(0)), txn.MaxAttempts(0), txn.StartOpen()}
	r := txn.New[*fakedb.Tx](db, append(base, opts...)...)
	require.NoError(t, r.Err())
	return db, r
}

// shrinkToOne makes one attempt conflict, with no retry (whose commit would
// raise the limit again), and checks that the limit is then 1.
func shrinkToOne(t *testing.T, r *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	calls := 0
	err := r.Run(context.Background(), failing(&calls, "k", errConflict), txn.MaxAttempts(1))
	require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	require.Equal(t, 1, r.AdmissionStats().Limit)
}

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// inside starts n Runs that each block inside fn until release is closed,
// and returns once all n are inside. Each Run returns result() from fn.
func inside(t *testing.T, r *txn.Runner[*fakedb.Tx], n int, release <-chan struct{}, result func() error, opts ...txn.CallOption) *sync.WaitGroup {
	t.Helper()
	var entered, done sync.WaitGroup
	entered.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			first := true
			_ = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				if first {
					first = false
					entered.Done()
					<-release
					return result()
				}
				return nil
			}, opts...)
		}()
	}
	entered.Wait()
	return &done
}

func TestAdaptiveOnByDefault(t *testing.T) {
	r := txn.New[*fakedb.Tx](fakedb.New())
	st := r.AdmissionStats()
	assert.Equal(t, txn.DefaultAdaptiveMax, st.Ceiling)
	assert.Equal(t, 1, st.Limit, "the limit starts in slow start")
	off := txn.New[*fakedb.Tx](fakedb.New(), txn.NoAdaptive())
	assert.Zero(t, off.AdmissionStats().Limit)
	require.NoError(t, off.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
}

func TestAdaptiveOpenAtLowContention(t *testing.T) {
	_, r := admissionRunner(t, txn.Adaptive(0))
	assert.Equal(t, txn.DefaultAdaptiveMax, r.AdmissionStats().Limit)
	for i := 0; i < 100; i++ {
		require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	}
	st := r.AdmissionStats()
	assert.Equal(t, txn.DefaultAdaptiveMax, st.Limit, "clean commits leave the limit wide open")
	assert.Zero(t, st.InFlight)
}

// sideBySide runs len(results) Runs side by side and returns once all have
// returned. They are admitted one after the other, all wait inside fn
// until the last is in, and fn returns results[i] in admission order, each
// Run returning before the next fn does, so the controller sees the same
// sequence of events on every run.
func sideBySide(t *testing.T, r *txn.Runner[*fakedb.Tx], results []error, opts ...txn.CallOption) {
	t.Helper()
	k := len(results)
	allIn := make(chan struct{})
	done := make([]chan struct{}, k)
	for i := range done {
		done[i] = make(chan struct{})
	}
	for i := 0; i < k; i++ {
		entered := make(chan struct{})
		go func() {
			defer close(done[i])
			first := true
			_ = r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
				if !first {
					return nil
				}
				first = false
				close(entered)
				<-allIn
				if i > 0 {
					<-done[i-1]
				}
				return results[i]
			}, opts...)
		}()
		<-entered
	}
	require.Equal(t, k, r.AdmissionStats().InFlight)
	close(allIn)
	<-done[k-1]
}

// repeat returns n copies of err.
func repeat(err error, n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

func TestAdaptiveShrinksUnderConflictStorm(t *testing.T) {
	checkNoLeak(t)
	_, r := admissionRunner(t, txn.Adaptive(64))
	once := txn.MaxAttempts(1) // no retries: their commits would raise the limit
	sideBySide(t, r, repeat(errConflict, 16), once)
	st := r.AdmissionStats()
	// One cut for the whole generation, by F/2 where F, the conflict
	// fraction, was 1/16 when the first conflict arrived: 16·(1-1/32).
	assert.Equal(t, 15, st.Limit)
	assert.Zero(t, st.InFlight)

	// The storm goes on: F is now about 2/3, so the next generation's cut
	// is deep: 8·(1-0.67/2) ≈ 5.3.
	sideBySide(t, r, repeat(errConflict, 8), once)
	assert.Equal(t, 5, r.AdmissionStats().Limit)

	// Conflicts never take the limit below one.
	for i := 0; i < 10; i++ {
		calls := 0
		require.Error(t, r.Run(context.Background(), failing(&calls, "k", errConflict), once))
	}
	assert.Equal(t, 1, r.AdmissionStats().Limit)
}

func TestAdaptiveRareConflictsBarelyCut(t *testing.T) {
	_, r := admissionRunner(t, txn.Adaptive(32))
	// Rounds of up to 16 Runs side by side (sideBySide makes the controller
	// see the same history on every run), one attempt in sixteen
	// conflicting, no retries. The conflicting attempt of a round returns
	// first, while all the others still run beside it. The fake clock
	// stands still, so every attempt weighs the same.
	attempts := 0
	steady := 0 // the limit once 1200 of the 1600 attempts ran
	for attempts < 1600 {
		k := min(16, r.AdmissionStats().Limit)
		results := make([]error, k)
		if (attempts+k)/16 > attempts/16 {
			results[0] = errConflict
		}
		sideBySide(t, r, results, txn.MaxAttempts(1))
		before := attempts
		attempts += k
		if before < 1200 && attempts >= 1200 {
			steady = r.AdmissionStats().Limit
		}
	}
	// With F near 1/16 each cut costs about 3 %, and the commits between
	// cuts win it back: the limit stays near the 16 that run.
	assert.GreaterOrEqual(t, steady, 12)
}

func TestAdaptiveGrowsBackOnCleanCommits(t *testing.T) {
	_, r := admissionRunner(t, txn.Adaptive(8))
	shrinkToOne(t, r)
	prev := 1
	commits := 0
	for r.AdmissionStats().Limit < 8 {
		require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
		commits++
		l := r.AdmissionStats().Limit
		assert.GreaterOrEqual(t, l, prev, "clean commits never shrink the limit")
		prev = l
		require.Less(t, commits, 1000, "the limit did not grow back")
	}
	// Additive increase of 1/limit per commit: about 1+2+...+7 commits.
	assert.InDelta(t, 28, commits, 8)
	for i := 0; i < 50; i++ {
		require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	}
	assert.Equal(t, 8, r.AdmissionStats().Limit, "capped at max")
}

func TestAdaptiveQueueIsFIFO(t *testing.T) {
	checkNoLeak(t)
	// A ceiling of one keeps the limit at one, so the order in which fn
	// runs is the order of admission.
	_, r := admissionRunner(t, txn.Adaptive(1))

	release := make(chan struct{})
	holder := inside(t, r, 1, release, func() error { return nil })
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				return nil
			}))
		}()
		waitFor(t, func() bool { return r.AdmissionStats().Queued == i+1 })
	}
	close(release)
	holder.Wait()
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4}, order)
}

func TestAdaptiveWaiterLeavesWhenContextEnds(t *testing.T) {
	checkNoLeak(t)
	rec := &admissionRecorder{}
	_, r := admissionRunner(t, txn.Adaptive(4), txn.WithObserver(rec))
	shrinkToOne(t, r)
	release := make(chan struct{})
	holder := inside(t, r, 1, release, func() error { return nil })

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	ran := false
	go func() {
		errc <- r.Run(ctx, func(context.Context, *fakedb.Tx) error { ran = true; return nil })
	}()
	waitFor(t, func() bool { return r.AdmissionStats().Queued == 1 })
	cancel()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Minute):
		require.FailNow(t, "a waiter whose context ended stayed in the queue")
	}
	assert.False(t, ran)
	assert.Zero(t, r.AdmissionStats().Queued)

	// The slot is still usable by the holder's successors.
	close(release)
	holder.Wait()
	require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }))
	assert.Zero(t, r.AdmissionStats().InFlight)
}

func TestAdaptiveObserverSeesWaits(t *testing.T) {
	rec := &admissionRecorder{}
	_, r := admissionRunner(t, txn.Adaptive(4), txn.WithObserver(rec))
	shrinkToOne(t, r)
	release := make(chan struct{})
	holder := inside(t, r, 1, release, func() error { return nil })
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }) }()
	waitFor(t, func() bool { return r.AdmissionStats().Queued == 1 })
	close(release)
	holder.Wait()
	require.NoError(t, <-errc)
	evs := rec.events()
	require.Len(t, evs, 1)
	assert.Equal(t, 2, evs[0].Limit, "the holder's clean commit raised the limit from 1 to 2 and admitted the waiter")
	assert.Zero(t, evs[0].Queue)
}

func TestAdaptivePanicReleasesSlot(t *testing.T) {
	_, r := admissionRunner(t, txn.Adaptive(2))
	assert.Panics(t, func() {
		_ = r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { panic("boom") }, txn.Keys("a"))
	})
	st := r.AdmissionStats()
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.Keys)
}

func TestKeysSerializeSameKey(t *testing.T) {
	checkNoLeak(t)
	_, r := admissionRunner(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
			close(entered)
			<-release
			return nil
		}, txn.Keys("acct:2", "acct:1")))
	}()
	<-entered

	// A different key runs while acct:1 and acct:2 are held.
	require.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }, txn.Keys("acct:3")))

	// The same key, named in the other order, waits.
	second := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
			close(second)
			return nil
		}, txn.Keys("acct:1", "acct:2", "acct:1")))
	}()
	waitFor(t, func() bool { return txn.KeyWaiters(r, "acct:1") == 1 })
	select {
	case <-second:
		require.FailNow(t, "a call on a held key ran")
	default:
	}
	close(release)
	<-second
	wg.Wait()
	assert.Zero(t, r.AdmissionStats().Keys, "keys nobody holds cost no memory")
}

func TestKeysWaiterLeavesWhenContextEnds(t *testing.T) {
	checkNoLeak(t)
	_, r := admissionRunner(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(context.Background(), func(context.Context, *fakedb.Tx) error {
			close(entered)
			<-release
			return nil
		}, txn.Keys("k"))
	}()
	<-entered
	// The waiter's deadline passes once it is queued for the key, not after
	// a wall-clock interval in which it might not have queued yet.
	ctx := newExpiring()
	errc := make(chan error, 1)
	go func() {
		errc <- r.Run(ctx, func(context.Context, *fakedb.Tx) error { return nil }, txn.Keys("k"))
	}()
	waitFor(t, func() bool { return txn.KeyWaiters(r, "k") == 1 })
	ctx.expire()
	assert.ErrorIs(t, <-errc, context.DeadlineExceeded)
	assert.Zero(t, txn.KeyWaiters(r, "k"), "the waiter left the queue")
	close(release)
	<-done
	assert.Zero(t, r.AdmissionStats().Keys)
}

// expiring is a context whose deadline passes when the test says so: Done
// closes and Err reports context.DeadlineExceeded once expire is called.
type expiring struct {
	context.Context
	done chan struct{}
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (c *expiring) expire()               { close(c.done) }
func (c *expiring) Done() <-chan struct{} { return c.done }

func (c *expiring) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func TestKeysRejectEmpty(t *testing.T) {
	_, r := admissionRunner(t)
	err := r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }, txn.Keys("a", ""))
	assert.ErrorIs(t, err, txn.ErrBadOption)
	assert.ErrorIs(t, txn.New[*fakedb.Tx](fakedb.New(), txn.Adaptive(-1)).Err(), txn.ErrBadOption)
}

func TestAdaptiveAndKeysUnderLoad(t *testing.T) {
	checkNoLeak(t)
	db, r := admissionRunner(t, txn.Adaptive(16))
	var wg sync.WaitGroup
	var mu sync.Mutex
	holders := map[string]int{}
	for g := 0; g < 12; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				key := []string{"a", "b", "c"}[(g+i)%3]
				calls := 0
				assert.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					mu.Lock()
					holders[key]++
					n := holders[key]
					mu.Unlock()
					defer func() {
						mu.Lock()
						holders[key]--
						mu.Unlock()
					}()
					assert.Equal(t, 1, n, "two attempts on key %s at once", key)
					calls++
					tx.Write("w")
					if calls == 1 && i%4 == 0 {
						return errConflict
					}
					return nil
				}, txn.Keys(key)))
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 480, db.Committed("w"))
	st := r.AdmissionStats()
	assert.Zero(t, st.InFlight)
	assert.Zero(t, st.Queued)
	assert.Zero(t, st.Keys)
}

type admissionRecorder struct {
	txn.NopObserver
	mu  sync.Mutex
	evs []txn.AdmissionEvent
}

func (a *admissionRecorder) Admitted(_ context.Context, e txn.AdmissionEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.evs = append(a.evs, e)
}

func (a *admissionRecorder) events() []txn.AdmissionEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]txn.AdmissionEvent(nil), a.evs...)
}

// waitFor polls cond until it holds; the deadline only bounds a broken test.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 100*time.Microsecond, "condition not reached")
}
