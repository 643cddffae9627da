package txn

import (
	"context"
	"time"
)

// Contention control decides when an attempt of an outermost Run may start.
// Two mechanisms, usable alone or together: conflict keys (keys.go) make
// attempts that name a common key take turns, and the adaptive limit
// (adaptive.go) caps how many attempts run at once. An attempt is admitted
// before it begins its transaction (keys first, then the limit) and
// released when it ends, so it holds its keys and slot through fn, the
// commit and any commit re-sends with their backoff; between attempts, while
// Run sleeps before running fn again, it holds nothing. Nested Runs are
// never admitted: they run inside an admitted attempt.
//
// Two lanes keep a hot spot from taking the whole Runner. First attempts
// take a slot of the main lane only. A Run whose attempt conflicted has met
// contention, so its retries first take a slot of the retry lane, a second,
// narrower adaptive limit (a quarter of the main ceiling, at least 1), then
// a slot of the main lane, where they wait ahead of first attempts (they
// have waited their turn once; without this every conflict would send a Run
// to the back of a long queue, and the tail latency would be a multiple of
// the queue's length). Retries thus never hold more than the retry lane's
// limit of the main lane's slots, however many Runs pile up on a hot row,
// and the transactions that keep missing cannot occupy every pooled
// connection while disjoint first attempts wait. The main lane learns from
// first attempts, the retry lane from retries, so the conflicts of a hot
// spot's retries narrow the retry lane, not the lane the rest of the
// traffic uses. No lane waits for another in a cycle (a retry takes the
// retry lane before the main one, a first attempt only the main one), so
// the lanes cannot deadlock.

// AdmissionStats is a snapshot of a Runner's contention control.
type AdmissionStats struct {
	// Limit is the adaptive concurrency limit (0 when it is off).
	Limit int
	// Ceiling is the most Limit can be: the smaller of Adaptive's max and
	// the backend's pool size (0 when the limit is off).
	Ceiling int
	// InFlight is the number of attempts currently admitted.
	InFlight int
	// Queued is the number of attempts waiting for the adaptive limit.
	Queued int
	// RetryLimit, RetryCeiling, RetryInFlight and RetryQueued describe the
	// retry lane: its limit and ceiling, the retries it admitted, and the
	// retries waiting for it.
	RetryLimit, RetryCeiling, RetryInFlight, RetryQueued int
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
		s.Limit, s.Ceiling, s.InFlight, s.Queued = a.allowed(), int(a.max), int(a.running.Load()), a.waiting()
		a.mu.Unlock()
	}
	if a := r.retryLane; a != nil {
		a.mu.Lock()
		s.RetryLimit, s.RetryCeiling, s.RetryInFlight, s.RetryQueued = a.allowed(), int(a.max), int(a.running.Load()), a.waiting()
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
	ahead    bool // in adaptive's ahead queue
	shareDB  bool // a key's: shares it with a holder that holds it in the database
	// probeWait is the adaptive lane's grant.probeWait for the waiter.
	probeWait time.Duration
	prev      *waiter
	next      *waiter
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

// pass is what admit returns for an admitted attempt and release takes
// back.
type pass struct {
	// keys are the conflict keys the attempt holds, sorted.
	keys []string
	// dbKeys are those it must hold in the database (DatabaseKeys): keys,
	// less those a stall escape let it share with a holder that holds them
	// there. begun is set once it began its transaction, holding them
	// (recorded in the key table).
	dbKeys []string
	begun  bool
	// limited is true when the attempt holds a slot of the adaptive limit,
	// granted as grant.
	limited bool
	grant   grant
	// bounded is true when the attempt began with its lock waits bounded
	// (LockWaitBounder), as a probe of the adaptive limit.
	bounded bool
	// retried is true when the attempt also holds a slot of the retry
	// lane, granted as retry.
	retried bool
	retry   grant
}

// admit takes an outermost attempt through key serialization and the
// adaptive limit, and reports a wait to the observer. It leaves the pass
// to release in st.pass, or returns the context's error (having released
// what it took).
func (r *Runner[T]) admit(ctx context.Context, st *runState) error {
	cfg := st.cfg
	var start time.Time
	if cfg.observer != nil {
		start = cfg.clock.Now()
	}
	p := &st.pass
	*p = pass{}
	keyWait := false
	if len(st.keys) > 0 {
		var err error
		if p.dbKeys, keyWait, err = r.keys.lock(ctx, st.keys); err != nil {
			*p = pass{}
			return err
		}
		p.keys = st.keys
	}
	if r.retryLane != nil && st.attempts > 0 {
		g, err := r.retryLane.acquire(ctx)
		if err != nil {
			r.keys.unlock(p.keys)
			*p = pass{}
			return err
		}
		p.retried, p.retry = true, g
	}
	if r.adaptive != nil {
		// A retry that passed the retry lane has waited its turn in the
		// main lane once already: it waits ahead of first attempts.
		g, err := r.adaptive.acquireAt(ctx, p.retried)
		if err != nil {
			if p.retried {
				r.retryLane.release(p.retry, endOther, cfg.clock)
			}
			r.keys.unlock(p.keys)
			*p = pass{}
			return err
		}
		p.limited, p.grant = true, g
	}
	if cfg.observer != nil && (keyWait || p.grant.waited || p.retry.waited) {
		key := ""
		if keyWait {
			key = st.keys[0]
		}
		lim, q := p.grant.limit, p.grant.queued
		if !p.grant.waited {
			lim, q = p.retry.limit, p.retry.queued
		}
		cfg.observer.Admitted(ctx, AdmissionEvent{Operation: cfg.operation, Wait: cfg.clock.Now().Sub(start), Limit: lim, Queue: q, Key: key})
	}
	return nil
}

// began tells the lanes that the attempt admitted with p has its
// transaction: from now on it runs, and its time counts. The first try of
// a Run admitted by a calm main lane (which learns from it only in one
// release of calmSample, or if it conflicts) is timed from the Run's start
// instead, which spares the happy path a clock read.
func (r *Runner[T]) began(st *runState, p *pass) {
	if !p.limited && !p.retried {
		return
	}
	var now time.Time
	if p.limited && p.grant.fast && !p.retried && st.tries == 0 {
		now = st.start
	} else {
		now = instant(st.cfg.clock)
	}
	if p.limited {
		r.adaptive.began(&p.grant, now)
	}
	if p.retried {
		r.retryLane.began(&p.retry, now)
	}
}

// release ends the admission in st.pass of an attempt that ended as end.
// The main lane learns from first attempts, the retry lane from retries.
func (r *Runner[T]) release(st *runState, end attemptEnd) {
	p := &st.pass
	if p.retried {
		r.retryLane.release(p.retry, end, st.cfg.clock)
	}
	if p.limited {
		mainEnd := end
		if p.retried {
			mainEnd = endOther
		}
		r.adaptive.release(p.grant, mainEnd, st.cfg.clock)
	}
	r.keys.unlockBegun(p.keys, p.dbKeys, p.begun)
}

// Stall escape. Admission must never make the Runner wait on itself: an
// attempt that holds the only slot (or a key) and, inside fn, starts a Run
// with a fresh context (an audit row in its own transaction) would wait for
// itself forever. Neither the adaptive limit nor the keys are needed for
// correctness (the database isolates transactions; they only spare it
// conflicts), so when attempts wait and none of those admitted has been
// released for a whole stall interval, the first waiter is admitted over the
// limit (or shares the key), and so on once per interval while nothing
// moves. A healthy queue drains by releases, far more often than once per
// interval, and never takes the escape. The interval is stallFactor times
// the average attempt duration, at least stallFloor, and is timed on the
// Runner's Clock.
//
// The floor must be longer than the pauses a healthy database makes by
// itself under contention, or the escape mistakes them for a stall: while
// two attempts wait out PostgreSQL's deadlock_timeout (1 s by default)
// nothing is released, and every waiter the escape admits meanwhile joins
// the tangle on the same rows (measured: one deadlock grew into eight
// within two seconds with a floor of 100 ms). Two seconds is twice that
// default; the price is that a Run started inside fn on a fresh context,
// while its caller holds the last slot, waits that long once.

// stallFloor is the shortest stall interval.
const stallFloor = 2 * time.Second

// stallFactor is how many average attempt durations make a stall.
const stallFactor = 8

// stallAfter is the stall interval for an average attempt duration of avg
// seconds.
func stallAfter(avg float64) time.Duration {
	secs := avg * stallFactor
	switch {
	case !(secs > stallFloor.Seconds()): // also NaN
		return stallFloor
	case secs > time.Hour.Seconds():
		// An attempt that ran for hours should not make every stall
		// that long.
		return time.Hour
	}
	return time.Duration(secs * float64(time.Second))
}

// stallWatch is the stall escape's bookkeeping for one queue (a lane, or a
// key); its owner's mutex guards it. progress counts the releases that let
// the queue move; while attempts wait, a timer checks once per stall
// interval that it moved.
type stallWatch struct {
	progress uint64
	mark     uint64      // progress when the timer was set
	gen      uint64      // identifies the current timer
	stop     func() bool // cancels the current timer; nil when none runs
}

// need stops the timer when nothing waits; when attempts wait and no timer
// runs, it records the progress to compare with and reports that the
// caller must set a timer that calls fired(gen) after the stall interval
// (and store its cancel function in stop).
func (s *stallWatch) need(waiting bool) (gen uint64, set bool) {
	switch {
	case !waiting && s.stop != nil:
		s.stop()
		s.stop = nil
	case waiting && s.stop == nil:
		s.mark = s.progress
		s.gen++
		return s.gen, true
	}
	return 0, false
}

// fired is called by the timer gen as it fires. It reports false if that
// timer was stopped or replaced meanwhile; otherwise the timer is spent,
// and stalled reports whether nothing moved since it was set.
func (s *stallWatch) fired(gen uint64) (current, stalled bool) {
	if s.gen != gen || s.stop == nil {
		return false, false
	}
	s.stop = nil
	return true, s.progress == s.mark
}

// afterFuncClock is implemented by clocks that can run a function once
// their time has advanced by d (the tests' fake clock). Other clocks time
// the stall interval with the system's timers.
type afterFuncClock interface {
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// afterFunc runs f once d has passed on clk, and returns a function that
// cancels it.
func afterFunc(clk Clock, d time.Duration, f func()) (stop func() bool) {
	if c, ok := clk.(afterFuncClock); ok {
		return c.AfterFunc(d, f)
	}
	return time.AfterFunc(d, f).Stop
}
