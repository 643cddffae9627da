package txn

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Adaptive concurrency (Adaptive) caps how many attempts of a Runner execute
// at once, with an AIMD controller driven by conflicts (retryable errors).
// AIMD fits because the database gives an explicit congestion signal, the
// conflict: there is no need to infer congestion from latency as gradient
// controllers do, and latency here mostly measures lock waits that the
// conflicts already report.
//
//   - Increase: every clean commit, while the limit is below its ceiling,
//     raises the limit by 1/(limit·patience), about one level per
//     limit·patience commits.
//   - Decrease, as in DCTCP: the controller keeps F, a moving average of
//     the share of attempt time spent in attempts that conflicted. Only
//     attempts that ran beside others move F (an attempt running alone says
//     nothing about contention), and each moves it in proportion to its
//     duration over the average one, up to 16 times a normal step, which
//     sets F outright. Weighing by time matters on PostgreSQL, where a
//     deadlock is found only after deadlock_timeout (one second by default).
//     A conflict then cuts the limit to (1 − F/2) times the smaller of the
//     limit and the concurrency the attempt ran with, at least 1, at most
//     once per generation of attempts (an attempt that began before the
//     last cut cannot cut again, as TCP cuts once per round trip), or once
//     the last cut is older than the average attempt: a generation is then
//     one attempt's time, whatever the number of attempts admitted before
//     the first cut, so that a cold start converges in a bounded number of
//     attempt durations (log₂ of the ceiling in a storm). When nearly
//     every attempt conflicts the limit halves; when one in twenty does, it
//     gives up 2.5 %, so the rare conflicts of a low-contention workload
//     cost next to no parallelism, which plain AIMD (whose limit settles
//     near √(2/p) for a conflict rate p) would give away.
//   - Patience: where every transaction touches the same rows, the level
//     just above the cut always fails, and on PostgreSQL a probe that ends
//     in a deadlock costs a whole deadlock_timeout. So a cut made while F ≥
//     1/4 multiplies patience by 1+F·w, where w ≥ 1 is the conflicting
//     attempt's duration over the average one (at most 16): a quick
//     conflict in a storm nearly doubles patience, a deadlock that waited
//     deadlock_timeout multiplies it by up to 17, so that the dearer a
//     failed probe, the rarer the next (up to maxPatience). After a cut
//     every level gained from the second on halves it (down to 1). Under
//     a steady storm probes become
//     exponentially rare and the limit sits at the best level; when
//     contention fades, the levels regained bring patience back to one. Rare
//     conflicts leave patience alone, or their many small cuts would slow
//     the increase until the limit decayed.
//
// An attempt is measured from the moment its BEGIN returned (began), not
// from its admission: time spent waiting for a pooled connection is not
// attempt time, and an attempt still waiting for one does not count in the
// concurrency a conflict is measured against. A retryable error from BEGIN
// itself (the pool timed out, the connection broke) teaches the controller
// nothing. (One exception spares the happy path a clock read: the first
// try of a Run admitted while the controller is calm is timed from the
// Run's start, which then precedes its BEGIN by BEGIN's own round trip
// only, since nothing queued. A calm controller learns from such a try
// only in one release of calmSample, or when it conflicts, which ends the
// calm; every later attempt is timed from its BEGIN.)
//
// The limit starts at 1, in slow start as TCP's: every clean commit raises
// it by one, which doubles it every generation, until the first conflict
// or the ceiling. A workload without contention reaches its ceiling in a
// few attempt times (log₂ of the ceiling generations); a storm is met at a
// low limit instead of with every pooled connection at once, which on
// PostgreSQL with a random lock order would be a tangle of deadlocks each
// found only after deadlock_timeout. While the limit stays at its ceiling, F is below
// calmConflict and nobody waits (the controller is "calm"), acquire and
// release use atomic operations only, except that one release in calmSample
// takes the mutex to sample the attempt's duration. The first conflict, or
// a queue, ends the calm and every acquire and release takes the mutex.

// DefaultAdaptiveMax is the adaptive limit's ceiling when Adaptive is given 0.
const DefaultAdaptiveMax = 1024

// conflictGain is the weight of one attempt in the conflict fraction F.
const conflictGain = 1.0 / 16

// stormConflict is the conflict share F from which a cut also makes the
// controller more patient.
const stormConflict = 0.25

// maxPatience bounds the slowdown of the additive increase.
const maxPatience = 4096

// adaptive is the AIMD concurrency limiter of one Runner.
//
// While the limit is wide open and nothing conflicts ("calm"), attempts are
// admitted and released with atomic operations only: the controller then
// has nothing to learn from a clean commit, and nobody waits. The first
// conflict, or a queue, ends the calm and everything goes through mu.
type adaptive struct {
	max float64

	// running counts admitted attempts; changed atomically, also under mu.
	running atomic.Int64
	// active counts admitted attempts whose BEGIN has returned.
	active atomic.Int64
	// releases counts fast releases, so that one in calmSample still
	// teaches the controller how long attempts take.
	releases atomic.Uint64
	// calm is true while limit is at max, F is below calmConflict and
	// nobody waits. It is stored under mu, and cleared before anyone
	// enqueues, so that a release that saw it true cannot miss a waiter.
	calm atomic.Bool

	mu       sync.Mutex
	limit    float64
	patience float64       // clean commits per level gained, divided by the level
	gained   int           // levels gained since the last cut
	conflict float64       // F: moving average of the conflict share
	avgDur   float64       // moving average of attempt durations, in seconds
	lastCut  time.Time     // when the last cut was made
	epoch    atomic.Uint64 // incremented at every cut, under mu
	slow     bool          // in slow start
	// contended is set by every cut, and cleared once the limit is back
	// at its ceiling, or has regained two levels with patience at 1 and
	// the conflict share F below calmConflict: while it is set, attempts
	// admitted beside others are probes.
	contended bool
	queue     waitQueue
	// ahead holds the waiters admitted before queue's: retries that
	// passed the retry lane, which have waited their turn once already.
	ahead waitQueue

	// Stall escape (see admission.go): its progress counts releases that
	// took mu; its timer runs on clock.
	clock Clock
	stall stallWatch
}

// calmConflict is the conflict share F below which a limit at its ceiling
// counts as calm.
const calmConflict = 0.01

// calmSample: one fast release in calmSample updates the average attempt
// duration, so that the first conflict after a calm is weighed by its time.
const calmSample = 64

// generationPassed reports whether the last cut is at least one average
// attempt old at now; the caller holds mu.
func (a *adaptive) generationPassed(now time.Time) bool {
	since := now.Sub(a.lastCut)
	return since > 0 && since.Seconds() >= a.avgDur
}

// retryLaneCeiling is the retry lane's ceiling for a main lane whose
// ceiling is main: a quarter of it, at least 1.
func retryLaneCeiling(main int) int {
	return max(1, (main+3)/4)
}

// newAdaptive returns a controller whose limit starts at its ceiling.
func newAdaptive(max int, clock Clock) *adaptive {
	a := &adaptive{max: float64(max), limit: float64(max), patience: 1, clock: clock}
	a.calm.Store(true)
	return a
}

// newSlowStart returns a controller in slow start: its limit starts at 1
// and every clean commit raises it by one, doubling it every generation,
// until the first conflict or the ceiling ends the slow start.
func newSlowStart(max int, clock Clock) *adaptive {
	a := newAdaptive(max, clock)
	if max > 1 {
		a.limit, a.slow = 1, true
		a.calm.Store(false)
	}
	return a
}

// allowed is the integer limit; the caller holds mu.
func (a *adaptive) allowed() int {
	if a.limit < 1 {
		return 1
	}
	return int(a.limit)
}

// grant is what acquire returns for an admitted attempt and release takes
// back.
type grant struct {
	// fast is true when the attempt was admitted without the mutex.
	fast bool
	// began is true once the attempt's BEGIN returned; only then does the
	// controller learn from how it ended.
	began bool
	// epoch is the number of cuts made before the attempt began.
	epoch uint64
	// inflight is the number of attempts that had begun and not ended when
	// this one began, this one included.
	inflight int
	// start is when the attempt's BEGIN returned.
	start time.Time
	// waited is true when the attempt queued; limit and queued are then the
	// limit and the queue length at admission.
	waited        bool
	limit, queued int
	// probeWait, when not 0, marks a probe (see probeWait): the Runner
	// asks a LockWaitBounder backend to bound its lock waits by it.
	probeWait time.Duration
}

// attemptEnd is how an admitted attempt ended, as the controller sees it.
type attemptEnd uint8

const (
	// endOther: a permanent error, a panic, or a commit of unknown outcome;
	// the controller learns nothing from it.
	endOther attemptEnd = iota
	// endCommitted: the attempt committed.
	endCommitted
	// endConflict: the attempt failed with a retryable error.
	endConflict
)

// endOf returns how the attempt whose outcome is o ended.
func endOf(o outcome) attemptEnd {
	switch {
	case o.err == nil:
		return endCommitted
	case o.class == ClassRetryable && !o.unreached && !o.connLost:
		// A database that could not be reached, or a connection lost,
		// says nothing of contention: cutting the limit for it would
		// leave a Runner slow long after the database came back.
		return endConflict
	}
	return endOther
}

// acquire admits one attempt, waiting in FIFO order while the limit is
// reached. It returns the attempt's grant, or ctx's error if ctx ended
// first.
func (a *adaptive) acquire(ctx context.Context) (grant, error) {
	return a.acquireAt(ctx, false)
}

// acquireAt is acquire; with ahead, the attempt waits ahead of every
// attempt that waits without it (in FIFO order among those with it).
func (a *adaptive) acquireAt(ctx context.Context, ahead bool) (grant, error) {
	if a.calm.Load() {
		if n := a.running.Add(1); a.calm.Load() && n <= int64(a.max) {
			return grant{fast: true}, nil
		}
		a.running.Add(-1)
		a.mu.Lock()
		a.admitWaiters()
		a.mu.Unlock()
	}
	a.mu.Lock()
	if !a.tryAdmit() {
		// Clear calm before counting again: a fast release that still
		// saw calm has then already lowered running.
		a.calm.Store(false)
		if !a.tryAdmit() {
			w := &waiter{ch: make(chan struct{}), ahead: ahead}
			if ahead {
				a.ahead.push(w)
			} else {
				a.queue.push(w)
			}
			a.watchStall()
			a.mu.Unlock()
			return a.wait(ctx, w)
		}
	}
	g := grant{probeWait: a.probeWait(a.running.Load())}
	a.mu.Unlock()
	return g, nil
}

// Probes. Where every transaction touches the same rows, an attempt that
// runs beside another can deadlock with it, and PostgreSQL finds a
// deadlock only after deadlock_timeout (1 s by default), while every
// queued attempt waits behind the two. So while the controller is
// contended (from any cut until the limit is back at its ceiling, or has
// regained two levels with patience back at 1 and the conflict share F
// back under calmConflict), an attempt admitted beside others is a probe: the Runner asks a LockWaitBounder backend to begin it
// with a lock timeout of a few average attempts, and a probe whose wait
// expires ends as a conflict, at the cost of those few attempts' time
// instead of deadlock_timeout. Neither the level a cut left nor patience >
// 1 marks enough: a first cut from slow start can leave the limit at 2 or
// 3, and the first conflicts are often quick serialization failures that
// cut without making the controller patient; two unbounded attempts at the
// level left then deadlock. For the same reason two levels regained do not
// end the contention while conflicts still take a share of the attempts:
// early in a storm, before patience has grown, the limit climbs back from
// 1 to 3 in a few commits. Nothing is bounded before the database has
// reported a conflict (slow start included: a workload without conflicts,
// such as READ COMMITTED updates queueing on a row, keeps its lock waits),
// the first attempt running never is, so every storm keeps one
// transaction that waits as long as it must, and a calm controller marks
// nothing.

// probeWaitFactor is how many average attempt durations a probe may wait
// for a lock.
const probeWaitFactor = 4

// probeWaitFloor and probeWaitCeiling bound a probe's lock wait.
const (
	probeWaitFloor   = 20 * time.Millisecond
	probeWaitCeiling = 500 * time.Millisecond
)

// probeWait returns the lock-wait bound of an attempt admitted as the
// n-th running one, or 0 when it is no probe; the caller holds mu.
func (a *adaptive) probeWait(n int64) time.Duration {
	if n <= 1 || !a.contended {
		return 0
	}
	d := time.Duration(a.avgDur * probeWaitFactor * float64(time.Second))
	return min(probeWaitCeiling, max(probeWaitFloor, d))
}

// tryAdmit admits the caller if nobody waits and the limit allows; the
// caller holds mu.
func (a *adaptive) tryAdmit() bool {
	if a.waiting() == 0 && a.running.Load() < int64(a.allowed()) {
		a.running.Add(1)
		return true
	}
	return false
}

// wait blocks a queued attempt until it is admitted or ctx ends.
func (a *adaptive) wait(ctx context.Context, w *waiter) (grant, error) {
	select {
	case <-w.ch:
	case <-ctx.Done():
		a.mu.Lock()
		if !w.admitted {
			if w.ahead {
				a.ahead.remove(w)
			} else {
				a.queue.remove(w)
			}
			a.watchStall()
			a.mu.Unlock()
			return grant{}, ctx.Err()
		}
		// Admitted while the context ended: take the slot, the caller
		// releases it like any other.
		a.mu.Unlock()
	}
	a.mu.Lock()
	g := grant{waited: true, limit: a.allowed(), queued: a.waiting(), probeWait: w.probeWait}
	a.mu.Unlock()
	return g, nil
}

// admitWaiters admits queued attempts while the limit allows, and
// recomputes calm; the caller holds mu.
func (a *adaptive) admitWaiters() {
	for a.waiting() > 0 && a.running.Load() < int64(a.allowed()) {
		a.admitHead()
	}
	a.watchStall()
	a.calm.Store(a.limit >= a.max && a.conflict < calmConflict && a.waiting() == 0)
}

// waiting is the number of attempts waiting; the caller holds mu.
func (a *adaptive) waiting() int { return a.queue.len() + a.ahead.len() }

// began records that the attempt admitted with g has its transaction: its
// time and the concurrency it runs with are counted from now.
func (a *adaptive) began(g *grant, now time.Time) {
	g.began, g.start = true, now
	g.inflight = int(a.active.Add(1))
	g.epoch = a.epoch.Load()
}

// admitHead admits the first waiter; the caller holds mu.
func (a *adaptive) admitHead() {
	w := a.ahead.pop()
	if w == nil {
		w = a.queue.pop()
	}
	w.admitted = true
	w.probeWait = a.probeWait(a.running.Add(1))
	close(w.ch)
}

// watchStall keeps a stall timer running while attempts wait, and stops it
// when none do; the caller holds mu.
func (a *adaptive) watchStall() {
	if gen, set := a.stall.need(a.waiting() > 0); set {
		a.stall.stop = afterFunc(a.clock, stallAfter(a.avgDur), func() { a.stalled(gen) })
	}
}

// stalled runs when a stall interval has passed since the timer was set:
// if no admitted attempt was released meanwhile, the first waiter is
// admitted over the limit. The timer is set again while attempts wait.
func (a *adaptive) stalled(gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	current, stalled := a.stall.fired(gen)
	if !current {
		return // a timer stopped, or replaced, as it fired
	}
	if stalled && a.waiting() > 0 {
		a.admitHead()
	}
	a.watchStall()
}

// release returns the slot of the attempt admitted with g and feeds how it
// ended to the controller. clk is read, for the attempt's duration, only
// when the controller learns from it.
func (a *adaptive) release(t grant, end attemptEnd, clk Clock) {
	a.running.Add(-1)
	seen := 0
	if t.began {
		// The concurrency this attempt ran with: the larger of what it
		// found when it began and what is running now, itself included.
		seen = max(t.inflight, int(a.active.Add(-1))+1)
	} else {
		// BEGIN failed: nothing ran, nothing to learn.
		end = endOther
	}
	conflict, committed := end == endConflict, end == endCommitted
	if t.fast && !conflict && a.calm.Load() && a.releases.Add(1)%calmSample != 0 {
		return
	}
	now := clk.Now()
	dur := now.Sub(t.start)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stall.progress++
	// F weighs each attempt by its duration relative to the average: it
	// estimates the share of attempt time lost to conflicts, so one
	// deadlock that waited a second counts for what it cost.
	weight := 1.0
	if conflict || committed {
		d := dur.Seconds()
		if a.avgDur > 0 {
			weight = min(1/conflictGain, d/a.avgDur)
		}
		if a.avgDur == 0 {
			a.avgDur = d // the first measurement
		} else {
			a.avgDur += (d - a.avgDur) * conflictGain
		}
		if seen > 1 {
			sample := 0.0
			if conflict {
				sample = 1
			}
			a.conflict += (sample - a.conflict) * min(1, weight*conflictGain)
		}
	}
	if conflict {
		a.slow = false
	}
	switch {
	case committed && a.slow:
		a.limit = min(a.max, a.limit+1)
		a.slow = a.limit < a.max
	case conflict && (t.epoch == a.epoch.Load() || a.generationPassed(now)):
		// Cut relative to the concurrency the attempt actually ran with,
		// so that a limit far above real use does not take many cuts to
		// matter, and in proportion to how much is conflicting.
		base := min(a.limit, float64(seen))
		a.limit = max(1, base*(1-a.conflict/2))
		a.epoch.Add(1)
		a.lastCut = now
		a.contended = true
		if a.conflict >= stormConflict {
			// The dearer the failed probe, the rarer the next: a
			// deadlock found after deadlock_timeout weighs up to 16
			// average attempts.
			a.patience = min(maxPatience, a.patience*(1+a.conflict*max(1, weight)))
		}
		a.gained = 0
	case committed && a.limit < a.max:
		level := int(a.limit)
		a.limit = min(a.max, a.limit+1/(a.limit*a.patience))
		if int(a.limit) > level {
			a.gained++
			if a.gained >= 2 {
				a.patience = max(1, a.patience/2)
			}
		}
		if a.limit >= a.max || a.gained >= 2 && a.patience <= 1 && a.conflict < calmConflict {
			a.contended = false
		}
	}
	a.admitWaiters()
}
