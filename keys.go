package txn

import (
	"context"
	"slices"
	"sync"
)

// Conflict keys (Keys) serialize, inside the process, the attempts that name
// the same key, while attempts on different keys run in parallel. A call's
// keys are taken in sorted order, so two calls naming the same keys in
// different orders cannot deadlock. Keys nobody holds or waits for are
// removed from the table.

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

// unlock releases keys; it does nothing for none.
func (kt *keyTable) unlock(keys []string) {
	if len(keys) == 0 {
		return
	}
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
