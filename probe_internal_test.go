package txn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// acquireNow admits one attempt without waiting, or fails the test.
func acquireNow(t *testing.T, a *adaptive) grant {
	t.Helper()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	g, err := a.acquire(done)
	require.NoError(t, err, "the limit should admit at once")
	return g
}

// storm drives a into a storm on one hot row: rounds of two attempts side
// by side, one committing and one conflicting, each run for dur.
func storm(t *testing.T, a *adaptive, clk *stepClock, rounds int, dur time.Duration) {
	t.Helper()
	for range rounds {
		var gs []grant
		for len(gs) < 2 {
			done, cancel := context.WithCancel(context.Background())
			cancel()
			g, err := a.acquire(done)
			if err != nil {
				// The limit is 1: a second attempt is admitted over
				// it, as the stall escape would.
				a.mu.Lock()
				a.running.Add(1)
				a.mu.Unlock()
				g = grant{}
			}
			a.began(&g, clk.now)
			gs = append(gs, g)
		}
		clk.now = clk.now.Add(dur)
		a.release(gs[0], endCommitted, clk)
		a.release(gs[1], endConflict, clk)
	}
}

// A calm controller marks no attempt as a probe: the happy path begins
// every transaction as the backend's Begin does.
func TestProbeCalmMarksNothing(t *testing.T) {
	a := newAdaptive(20, systemClock{})
	for i := range 20 {
		g := acquireNow(t, a)
		assert.Zero(t, g.probeWait, "attempt %d of a calm controller", i+1)
	}
}

// Slow start bounds nothing: before the database has reported a
// conflict, lock waits may be the workload's own queue (READ COMMITTED
// updates of one row), not a deadlock in the making.
func TestProbeSlowStartMarksNothing(t *testing.T) {
	clk := &stepClock{now: time.Unix(1, 0)}
	a := newSlowStart(20, systemClock{})
	for round := range 4 {
		var gs []grant
		for {
			done, cancel := context.WithCancel(context.Background())
			cancel()
			g, err := a.acquire(done)
			if err != nil {
				break
			}
			assert.Zero(t, g.probeWait, "round %d, attempt %d", round, len(gs)+1)
			a.began(&g, clk.now)
			gs = append(gs, g)
		}
		clk.now = clk.now.Add(time.Millisecond)
		for _, g := range gs {
			a.release(g, endCommitted, clk)
		}
	}
}

// After a storm's cuts the attempts admitted beside a running one are
// probes, and a probe's bound follows the average attempt.
func TestProbeAfterStormMarksBesideOthers(t *testing.T) {
	clk := &stepClock{now: time.Unix(1, 0)}
	a := newAdaptive(20, systemClock{})
	storm(t, a, clk, 40, 50*time.Millisecond)
	a.mu.Lock()
	require.Equal(t, 1, a.allowed(), "the storm leaves the limit at 1")
	require.Greater(t, a.patience, 1.0, "and the controller patient")
	a.mu.Unlock()

	g := acquireNow(t, a)
	assert.Zero(t, g.probeWait, "the only attempt running")
	a.began(&g, clk.now)
	// Clean commits raise the limit to 2, at the pace patience allows.
	for i := 0; ; i++ {
		require.Less(t, i, 100000, "the limit never reached 2")
		clk.now = clk.now.Add(50 * time.Millisecond)
		a.release(g, endCommitted, clk)
		g = acquireNow(t, a)
		a.began(&g, clk.now)
		a.mu.Lock()
		level := a.allowed()
		a.mu.Unlock()
		if level >= 2 {
			break
		}
	}
	probe := acquireNow(t, a)
	assert.Equal(t, 200*time.Millisecond, probe.probeWait, "the probe's bound: 4 average attempts of 50 ms")

	// Bounds of the wait.
	a.mu.Lock()
	defer a.mu.Unlock()
	a.avgDur = 0.0001
	assert.Equal(t, probeWaitFloor, a.probeWait(2))
	a.avgDur = 3
	assert.Equal(t, probeWaitCeiling, a.probeWait(2))
	assert.Zero(t, a.probeWait(1), "the only attempt running")
	a.contended = false
	assert.Zero(t, a.probeWait(5), "contention faded")
}

// A queued attempt admitted beside a running one carries the probe's
// bound too.
func TestProbeQueuedWaiterMarked(t *testing.T) {
	clk := &stepClock{now: time.Unix(1, 0)}
	a := newAdaptive(20, systemClock{})
	storm(t, a, clk, 40, 10*time.Millisecond)
	g1 := acquireNow(t, a)
	a.began(&g1, clk.now)
	// A second attempt runs beside it (as one the stall escape admitted).
	a.running.Add(1)
	a.mu.Lock()
	w := &waiter{ch: make(chan struct{})}
	a.queue.push(w)
	a.limit = 2.5 // regained a level meanwhile
	a.mu.Unlock()
	clk.now = clk.now.Add(10 * time.Millisecond)
	a.release(g1, endCommitted, clk) // one attempt runs, the limit is 2
	select {
	case <-w.ch:
	default:
		require.FailNow(t, "the waiter was not admitted")
	}
	assert.NotZero(t, w.probeWait, "admitted as the second running attempt of a contended controller")
}

// Contention ends with the limit back at its ceiling, or two levels
// regained with patience back at 1: attempts are then no probes.
func TestProbeContentionFades(t *testing.T) {
	clk := &stepClock{now: time.Unix(1, 0)}
	a := newAdaptive(8, systemClock{})
	// One quick conflict among four attempts: a cut to 3, no patience.
	var gs []grant
	for range 4 {
		g := acquireNow(t, a)
		a.began(&g, clk.now)
		gs = append(gs, g)
	}
	clk.now = clk.now.Add(time.Millisecond)
	for _, g := range gs[:3] {
		a.release(g, endCommitted, clk)
	}
	a.release(gs[3], endConflict, clk)
	a.mu.Lock()
	require.Equal(t, 1.0, a.patience, "a quick conflict does not make the controller patient")
	require.True(t, a.contended)
	a.mu.Unlock()
	h1 := acquireNow(t, a)
	h2 := acquireNow(t, a)
	assert.Zero(t, h1.probeWait)
	assert.NotZero(t, h2.probeWait, "beside another after the cut")
	a.began(&h1, clk.now)
	a.began(&h2, clk.now)
	for i := 0; ; i++ {
		require.Less(t, i, 10000, "the limit never came back")
		clk.now = clk.now.Add(time.Millisecond)
		a.release(h1, endCommitted, clk)
		h1 = acquireNow(t, a)
		a.began(&h1, clk.now)
		a.mu.Lock()
		back := a.limit >= a.max
		a.mu.Unlock()
		if back {
			break
		}
	}
	a.mu.Lock()
	assert.False(t, a.contended, "the limit is back at its ceiling")
	a.mu.Unlock()
	assert.Zero(t, acquireNow(t, a).probeWait)
}

// A bound costs a Run one attempt at most, and none when no attempt would
// be left to run fn again.
func TestMayBound(t *testing.T) {
	st := &runState{cfg: &config{}}
	assert.True(t, st.mayBound(), "no attempt limit")
	st.boundSpent = true
	assert.False(t, st.mayBound(), "after a bound expired")
	st = &runState{cfg: &config{maxAttempts: 3}, tries: 1}
	assert.True(t, st.mayBound(), "the third attempt remains")
	st.tries = 2
	assert.False(t, st.mayBound(), "the last attempt")
}

// Two levels regained with patience at 1 do not end the contention while
// conflicts still take a share of the attempts (early in a storm the
// limit climbs back from 1 to 3 in a few commits); once the share has
// decayed under calmConflict, they do.
func TestProbeContentionOutlastsQuickRegain(t *testing.T) {
	clk := &stepClock{now: time.Unix(1, 0)}
	a := newAdaptive(20, systemClock{})
	storm(t, a, clk, 10, time.Millisecond)
	a.mu.Lock()
	a.patience = 1 // as after quick conflicts that did not make it patient
	a.limit = 1
	a.gained = 0
	f := a.conflict
	a.mu.Unlock()
	require.GreaterOrEqual(t, f, calmConflict, "the storm left a conflict share")
	// Clean commits of attempts running alone raise the limit to 3
	// without moving F (an attempt alone says nothing of contention).
	for i := 0; ; i++ {
		require.Less(t, i, 100, "the limit never regained two levels")
		g := acquireNow(t, a)
		a.began(&g, clk.now)
		clk.now = clk.now.Add(time.Millisecond)
		a.release(g, endCommitted, clk)
		a.mu.Lock()
		up := a.gained >= 2
		a.mu.Unlock()
		if up {
			break
		}
	}
	a.mu.Lock()
	assert.True(t, a.contended, "still contended while F is %.3f", a.conflict)
	a.mu.Unlock()
	// Clean commits beside others decay F; the contention then ends.
	for i := 0; ; i++ {
		require.Less(t, i, 10000, "the contention never ended")
		g1, g2 := acquireNow(t, a), acquireNow(t, a)
		a.began(&g1, clk.now)
		a.began(&g2, clk.now)
		clk.now = clk.now.Add(time.Millisecond)
		a.release(g1, endCommitted, clk)
		a.release(g2, endCommitted, clk)
		a.mu.Lock()
		done := !a.contended
		a.mu.Unlock()
		if done {
			break
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	assert.Less(t, a.conflict, calmConflict)
}
