package txn

// StartOpen makes the Runner's adaptive limits start at their ceilings
// instead of in slow start, for tests of the steady state.
func StartOpen() RunnerOption {
	return runnerOption(func(c *config) { c.startOpen = true })
}

// KeyWaiters returns the number of attempts of r waiting for key, so that
// tests can tell a call is queued without waiting on the clock.
func KeyWaiters[T any](r *Runner[T], key string) int {
	r.keys.mu.Lock()
	defer r.keys.mu.Unlock()
	if e := r.keys.m[key]; e != nil {
		return e.queue.len()
	}
	return 0
}

// StallFloor is the shortest stall interval of the contention control.
const StallFloor = stallFloor

// Contend puts r's adaptive limit in the state a storm leaves it in
// (contended, out of slow start, below its ceiling), so that attempts
// admitted beside others are probes: the fuzzer reaches them without
// scripting a storm.
func Contend[T any](r *Runner[T]) {
	a := r.adaptive
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slow = false
	a.contended = true
	a.calm.Store(false)
	if a.limit >= a.max && a.max > 1 {
		a.limit = a.max - 0.5
	}
}
