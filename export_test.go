package txn

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
