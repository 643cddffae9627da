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

// pass is what admit returns for an admitted attempt and release takes
// back.
type pass struct {
	// keys are the conflict keys the attempt holds, sorted.
	keys []string
	// limited is true when the attempt holds a slot of the adaptive limit,
	// granted as grant.
	limited bool
	grant   grant
}

// admit takes an outermost attempt through key serialization and the
// adaptive limit, and reports a wait to the observer. It returns the pass
// to release, or the context's error (having released what it took).
func (r *Runner[T]) admit(ctx context.Context, st *runState) (pass, error) {
	cfg := st.cfg
	var start time.Time
	if cfg.observer != nil {
		start = cfg.clock.Now()
	}
	var p pass
	keyWait := false
	if len(st.keys) > 0 {
		var err error
		if keyWait, err = r.keys.lock(ctx, st.keys); err != nil {
			return pass{}, err
		}
		p.keys = st.keys
	}
	if r.adaptive != nil {
		g, err := r.adaptive.acquire(ctx)
		if err != nil {
			r.keys.unlock(p.keys)
			return pass{}, err
		}
		if g.fast && st.attempts == 0 {
			// The first attempt of a calm Run starts with the Run: its
			// clock reading serves, and the happy path reads no other.
			g.start = st.start
		} else {
			g.start = cfg.clock.Now()
		}
		p.limited, p.grant = true, g
	}
	if cfg.observer != nil && (keyWait || p.grant.waited) {
		key := ""
		if keyWait {
			key = st.keys[0]
		}
		cfg.observer.Admitted(ctx, AdmissionEvent{Operation: cfg.operation, Wait: cfg.clock.Now().Sub(start), Limit: p.grant.limit, Queue: p.grant.queued, Key: key})
	}
	return p, nil
}

// release ends the admission of an attempt that ended as end.
func (r *Runner[T]) release(st *runState, p pass, end attemptEnd) {
	if p.limited {
		r.adaptive.release(p.grant, end, st.cfg.clock)
	}
	r.keys.unlock(p.keys)
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

// stallFloor is the shortest stall interval.
const stallFloor = 100 * time.Millisecond

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
