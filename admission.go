package txn

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Contention control. Two mechanisms, usable alone or together, decide when
// an attempt may start; both act only on outermost Runs, once per attempt
// (an attempt sleeping in backoff holds nothing).
//
// Adaptive concurrency (Adaptive) caps how many attempts of a Runner execute
// at once, with an AIMD controller driven by conflicts (retryable errors).
// AIMD fits because the database gives an explicit congestion signal, the
// conflict: there is no need to infer congestion from latency as gradient
// controllers do, and latency here mostly measures lock waits that the
// conflicts already report.
//
//   - Increase: every clean commit raises the limit by 1/(limit·patience),
//     about one level per limit·patience commits.
//   - Decrease, as in DCTCP: the controller keeps F, a moving average of
//     the share of attempt time spent in attempts that conflicted, counting
//     only attempts that ran beside others (an attempt running alone says
//     nothing about contention). Weighing by time matters on PostgreSQL,
//     where a deadlock is found only after deadlock_timeout (one second by
//     default): one such attempt outweighs a thousand quick ones. A conflict cuts the limit to (1 − F/2) times the
//     concurrency the attempt ran with, at most once per generation of
//     attempts (an attempt admitted before the last cut cannot cut again, as
//     TCP cuts once per round trip). When nearly every attempt conflicts
//     the limit halves; when one in twenty does, it gives up 2.5 %, so the
//     rare conflicts of a low-contention workload cost next to no
//     parallelism, which plain AIMD (whose limit settles near √(2/p) for a
//     conflict rate p) would give away.
//   - Patience: where every transaction touches the same rows, the level
//     just above the cut always fails, and on PostgreSQL a probe that ends
//     in a deadlock costs a whole deadlock_timeout. So a cut made while a
//     large share of the work conflicts (F ≥ 1/4) multiplies patience by
//     1+F (nearly doubling it in a storm, up to maxPatience), and each
//     level passed in turn (the
//     second level gained since the last cut) halves it. Under a steady
//     storm probes become exponentially rare and the limit sits at the best
//     level; when contention fades, the levels regained bring patience back
//     to one. Rare conflicts leave patience alone, or their many small cuts
//     would slow the increase until the limit decayed.
//
// The limit starts wide open and stays there while nothing conflicts, so
// at low contention the controller costs a mutex round trip per attempt.
//
// Conflict keys (Keys) serialize, inside the process, the attempts that name
// the same key, while attempts on different keys run in parallel. A
// transaction's keys are taken in sorted order, so two calls naming the same
// keys in different orders cannot deadlock. Keys nobody holds or waits for
// are removed from the table.

// DefaultAdaptiveMax is the adaptive limit's ceiling when Adaptive is given 0.
const DefaultAdaptiveMax = 1024

// conflictGain is the weight of one attempt in the conflict fraction F.
const conflictGain = 1.0 / 16

// stormConflict is the conflict share F from which a cut also makes the
// controller more patient.
const stormConflict = 0.25

// maxPatience bounds the slowdown of the additive increase.
const maxPatience = 1024

// Adaptive sets the ceiling of the Runner's adaptive concurrency control,
// which is on by default with DefaultAdaptiveMax: at most limit attempts run
// at once, where limit shrinks when attempts conflict and grows back while
// they commit cleanly, between 1 and max (0 means DefaultAdaptiveMax).
// Attempts over the limit wait in a first-in, first-out queue and leave it
// as soon as their context ends. Runner only; max must not be negative.
func Adaptive(max int) Option {
	return func(c *config) {
		if !c.runnerOnly("Adaptive") {
			return
		}
		if max < 0 {
			c.fail("Adaptive(%d) is negative", max)
			return
		}
		if max == 0 {
			max = DefaultAdaptiveMax
		}
		c.adaptiveMax = max
	}
}

// NoAdaptive turns the adaptive concurrency control off: attempts start as
// soon as they are called, however many conflict. Runner only. Measured with
// txnbench, the control never cost more than noise at low contention and
// kept goodput near the serial rate in storms (see the README), so turn it
// off only to compare, or when something outside the Runner already limits
// concurrency per hot row.
func NoAdaptive() Option {
	return func(c *config) {
		if !c.runnerOnly("NoAdaptive") {
			return
		}
		c.adaptiveMax = 0
	}
}

// Keys names what this call's transaction will write (an account id, an
// order number): calls of the same Runner naming a common key run their
// attempts one at a time, in arrival order, while calls on disjoint keys run
// in parallel. Use it per call. An empty key is an error.
func Keys(keys ...string) Option {
	return func(c *config) {
		for _, k := range keys {
			if k == "" {
				c.fail("Keys: empty key")
				return
			}
		}
		c.keys = keys
	}
}

// AdmissionStats is a snapshot of a Runner's contention control.
type AdmissionStats struct {
	// Limit is the adaptive concurrency limit (0 when it is off).
	Limit int
	// InFlight is the number of attempts currently admitted.
	InFlight int
	// Queued is the number of attempts waiting for the adaptive limit.
	Queued int
	// Keys is the number of conflict keys held or waited for.
	Keys int
}

// AdmissionStats returns the current state of r's contention control.
func (r *Runner[T]) AdmissionStats() AdmissionStats {
	if r == nil {
		return AdmissionStats{}
	}
	var s AdmissionStats
	if a := r.adaptive; a != nil {
		a.mu.Lock()
		s.Limit, s.InFlight, s.Queued = a.allowed(), int(a.running.Load()), a.queue.len()
		a.mu.Unlock()
	}
	r.keys.mu.Lock()
	s.Keys = len(r.keys.m)
	r.keys.mu.Unlock()
	return s
}

// waiter is one attempt waiting in a FIFO queue.
type waiter struct {
	ch       chan struct{}
	admitted bool
	prev     *waiter
	next     *waiter
}

// waitQueue is an intrusive doubly linked FIFO, so that a waiter whose
// context ends leaves in O(1).
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) len() int { return q.n }

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	if w != nil {
		q.remove(w)
	}
	return w
}

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
	epoch    atomic.Uint64 // incremented at every cut, under mu
	queue    waitQueue
}

// calmConflict is the conflict share F below which a limit at its ceiling
// counts as calm.
const calmConflict = 0.01

// calmSample: one fast release in calmSample updates the average attempt
// duration, so that the first conflict after a calm is weighed by its time.
const calmSample = 64

func newAdaptive(max int) *adaptive {
	a := &adaptive{max: float64(max), limit: float64(max), patience: 1}
	a.calm.Store(true)
	return a
}

// allowed is the integer limit; the caller holds mu.
func (a *adaptive) allowed() int {
	if a.limit < 1 {
		return 1
	}
	return int(a.limit)
}

// ticket is what an admitted attempt hands back on release.
type ticket struct {
	fast     bool // admitted without the lock
	epoch    uint64
	inflight int
	start    time.Time
}

// acquire admits one attempt, waiting in FIFO order while the limit is
// reached. It reports whether it waited, the limit and queue length at
// admission, or ctx's error if ctx ended first.
func (a *adaptive) acquire(ctx context.Context) (t ticket, waited bool, limit, queued int, err error) {
	if a.calm.Load() {
		if n := a.running.Add(1); a.calm.Load() && n <= int64(a.max) {
			return ticket{fast: true, epoch: a.epoch.Load()}, false, 0, 0, nil
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
			w := &waiter{ch: make(chan struct{})}
			a.queue.push(w)
			a.mu.Unlock()
			return a.wait(ctx, w)
		}
	}
	t = ticket{epoch: a.epoch.Load(), inflight: int(a.running.Load())}
	a.mu.Unlock()
	return t, false, 0, 0, nil
}

// tryAdmit admits the caller if nobody waits and the limit allows; the
// caller holds mu.
func (a *adaptive) tryAdmit() bool {
	if a.queue.len() == 0 && a.running.Load() < int64(a.allowed()) {
		a.running.Add(1)
		return true
	}
	return false
}

// wait blocks a queued attempt until it is admitted or ctx ends.
func (a *adaptive) wait(ctx context.Context, w *waiter) (t ticket, waited bool, limit, queued int, err error) {
	select {
	case <-w.ch:
	case <-ctx.Done():
		a.mu.Lock()
		if !w.admitted {
			a.queue.remove(w)
			a.mu.Unlock()
			return ticket{}, true, 0, 0, ctx.Err()
		}
		// Admitted while the context ended: take the slot, the caller
		// releases it like any other.
		a.mu.Unlock()
	}
	a.mu.Lock()
	t = ticket{epoch: a.epoch.Load(), inflight: int(a.running.Load())}
	limit, queued = a.allowed(), a.queue.len()
	a.mu.Unlock()
	return t, true, limit, queued, nil
}

// admitWaiters admits queued attempts while the limit allows, and
// recomputes calm; the caller holds mu.
func (a *adaptive) admitWaiters() {
	for a.queue.len() > 0 && a.running.Load() < int64(a.allowed()) {
		w := a.queue.pop()
		w.admitted = true
		a.running.Add(1)
		close(w.ch)
	}
	a.calm.Store(a.limit >= a.max && a.conflict < calmConflict && a.queue.len() == 0)
}

// release returns an attempt's slot and feeds its outcome to the controller:
// conflict is true for an attempt that failed with a retryable error,
// committed for one that committed. clk is read, for the attempt's
// duration, only when the controller learns from it.
func (a *adaptive) release(t ticket, conflict, committed bool, clk Clock) {
	// The concurrency this attempt ran with: the larger of what it found
	// on admission and what is in flight now, itself included.
	seen := max(t.inflight, int(a.running.Add(-1))+1)
	if t.fast && !conflict && a.calm.Load() && a.releases.Add(1)%calmSample != 0 {
		return
	}
	dur := clk.Now().Sub(t.start)
	a.mu.Lock()
	defer a.mu.Unlock()
	if conflict || committed {
		// F weighs each attempt by its duration relative to the average:
		// it estimates the share of attempt time lost to conflicts, so one
		// deadlock that waited a second counts for what it cost.
		d := dur.Seconds()
		weight := 1.0
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
	switch {
	case conflict && t.epoch == a.epoch.Load():
		// Cut relative to the concurrency the attempt actually ran with,
		// so that a limit far above real use does not take many cuts to
		// matter, and in proportion to how much is conflicting.
		base := min(a.limit, float64(seen))
		a.limit = max(1, base*(1-a.conflict/2))
		a.epoch.Add(1)
		if a.conflict >= stormConflict {
			a.patience = min(maxPatience, a.patience*(1+a.conflict))
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
	}
	a.admitWaiters()
}

// keyTable serializes attempts by conflict key.
type keyTable struct {
	mu sync.Mutex
	m  map[string]*keyEntry
}

// keyEntry is one key's holder flag and FIFO of waiters.
type keyEntry struct {
	held  bool
	queue waitQueue
}

// lock takes every key in keys, in sorted order, and reports whether it had
// to wait. On error (ctx ended) it has released the keys it took.
func (kt *keyTable) lock(ctx context.Context, keys []string) (waited bool, err error) {
	for i, k := range keys {
		w, err := kt.lockOne(ctx, k)
		waited = waited || w
		if err != nil {
			kt.unlock(keys[:i])
			return waited, err
		}
	}
	return waited, nil
}

func (kt *keyTable) lockOne(ctx context.Context, k string) (waited bool, err error) {
	kt.mu.Lock()
	if kt.m == nil {
		kt.m = make(map[string]*keyEntry)
	}
	e := kt.m[k]
	if e == nil {
		e = &keyEntry{}
		kt.m[k] = e
	}
	if !e.held {
		e.held = true
		kt.mu.Unlock()
		return false, nil
	}
	w := &waiter{ch: make(chan struct{})}
	e.queue.push(w)
	kt.mu.Unlock()
	select {
	case <-w.ch:
		return true, nil
	case <-ctx.Done():
		kt.mu.Lock()
		defer kt.mu.Unlock()
		if w.admitted {
			// The key was handed over as the context ended: hand it on.
			kt.handOn(k, e)
		} else {
			e.queue.remove(w)
		}
		return true, ctx.Err()
	}
}

// unlock releases keys.
func (kt *keyTable) unlock(keys []string) {
	kt.mu.Lock()
	defer kt.mu.Unlock()
	for _, k := range keys {
		kt.handOn(k, kt.m[k])
	}
}

// handOn passes k from its holder to the next waiter, or forgets k when
// nobody waits. The caller holds mu.
func (kt *keyTable) handOn(k string, e *keyEntry) {
	if w := e.queue.pop(); w != nil {
		w.admitted = true
		close(w.ch)
		return
	}
	delete(kt.m, k)
}

// sortedKeys returns keys sorted and without duplicates, copying only when
// it must.
func sortedKeys(keys []string) []string {
	if len(keys) < 2 {
		return keys
	}
	if slices.IsSorted(keys) && !hasAdjacentDup(keys) {
		return keys
	}
	out := slices.Clone(keys)
	slices.Sort(out)
	return slices.Compact(out)
}

func hasAdjacentDup(keys []string) bool {
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return true
		}
	}
	return false
}

// admit takes an outermost attempt through key serialization and the
// adaptive limit, and reports a wait to the observer. It returns the ticket
// to release, or the context's error.
func (r *Runner[T]) admit(ctx context.Context, st *runState) (ticket, error) {
	cfg := st.cfg
	var start time.Time
	if cfg.observer != nil {
		start = cfg.clock.Now()
	}
	keyed := len(st.keys) > 0
	var keyWait bool
	if keyed {
		var err error
		if keyWait, err = r.keys.lock(ctx, st.keys); err != nil {
			return ticket{}, err
		}
	}
	var (
		t             ticket
		limitWait     bool
		limit, queued int
	)
	if r.adaptive != nil {
		var err error
		t, limitWait, limit, queued, err = r.adaptive.acquire(ctx)
		if err != nil {
			if keyed {
				r.keys.unlock(st.keys)
			}
			return ticket{}, err
		}
		if t.fast && st.attempts == 0 {
			// The first attempt of a calm Run starts with the Run: its
			// clock reading serves, and the happy path reads no other.
			t.start = st.start
		} else {
			t.start = cfg.clock.Now()
		}
	}
	if cfg.observer != nil && (keyWait || limitWait) {
		key := ""
		if keyWait {
			key = st.keys[0]
		}
		cfg.observer.Admitted(ctx, AdmissionEvent{Operation: cfg.operation, Wait: cfg.clock.Now().Sub(start), Limit: limit, Queue: queued, Key: key})
	}
	return t, nil
}

// release ends an attempt's admission.
func (r *Runner[T]) release(st *runState, t ticket, cls Class, err error) {
	if r.adaptive != nil {
		r.adaptive.release(t, err != nil && cls == ClassRetryable, err == nil, st.cfg.clock)
	}
	if len(st.keys) > 0 {
		r.keys.unlock(st.keys)
	}
}
