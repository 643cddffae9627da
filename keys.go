package txn

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Conflict keys (Keys) serialize, inside the process, the attempts that name
// the same key, while attempts on different keys run in parallel. A call's
// keys are taken in sorted order, so two calls naming the same keys in
// different orders cannot deadlock. Keys nobody holds or waits for are
// removed from the table. A key whose holders have released nothing for a
// stall interval while others wait is shared with the first waiter (see
// admission.go): keys spare the database conflicts, it keeps correctness.
//
// With DatabaseKeys an attempt also holds its keys in the database, after
// it holds them here. A waiter that the stall escape lets share a key
// whose holder in this process already holds it in the database shares
// that lock too: it does not take the key in the database, where it would
// wait for the very holder it shares with (a Run started inside fn with a
// fresh context, on its caller's key, would wait for its caller until its
// context ends). A waiter admitted while the holder is still waiting in the
// database, for another process, takes the key there as usual, so the
// escape never lets an attempt past another process's holder.

// keyTable serializes attempts by conflict key.
type keyTable struct {
	mu sync.Mutex
	m  map[string]*keyEntry

	// Set by New: the clock that times stalls and the stall interval.
	clock Clock
	stall func() time.Duration
}

// keyEntry is one key's holders and FIFO of waiters.
type keyEntry struct {
	holders int // 1, or more after stall escapes
	queue   waitQueue
	// dbHeld counts the holders that hold the key in the database too
	// (DatabaseKeys).
	dbHeld int

	stall stallWatch // its progress counts releases of the key
}

// lock takes every key in keys, in sorted order, and reports whether it had
// to wait. dbKeys are the keys the attempt must take in the database, if
// the Runner holds keys there: keys, less those that a stall escape let it
// share with a holder that holds them in the database already (a new slice
// only then). On error (ctx ended) it has released the keys it took.
func (kt *keyTable) lock(ctx context.Context, keys []string) (dbKeys []string, waited bool, err error) {
	dbKeys = keys
	copied := false
	for i, k := range keys {
		w, shareDB, err := kt.lockOne(ctx, k)
		waited = waited || w
		if err != nil {
			kt.unlock(keys[:i])
			return nil, waited, err
		}
		switch {
		case shareDB && !copied:
			dbKeys = append(make([]string, 0, len(keys)-1), keys[:i]...)
			copied = true
		case !shareDB && copied:
			dbKeys = append(dbKeys, k)
		}
	}
	return dbKeys, waited, nil
}

// lockOne takes k. shareDB reports that a stall escape admitted the caller
// to share k with a holder that holds k in the database.
func (kt *keyTable) lockOne(ctx context.Context, k string) (waited, shareDB bool, err error) {
	kt.mu.Lock()
	if kt.m == nil {
		kt.m = make(map[string]*keyEntry)
	}
	e := kt.m[k]
	if e == nil {
		e = &keyEntry{}
		kt.m[k] = e
	}
	if e.holders == 0 {
		e.holders = 1
		kt.mu.Unlock()
		return false, false, nil
	}
	w := &waiter{ch: make(chan struct{})}
	e.queue.push(w)
	kt.watchStall(k, e)
	kt.mu.Unlock()
	select {
	case <-w.ch:
		return true, w.shareDB, nil
	case <-ctx.Done():
		kt.mu.Lock()
		defer kt.mu.Unlock()
		if w.admitted {
			// The key was handed over as the context ended: hand it on.
			kt.handOn(k, e)
		} else {
			e.queue.remove(w)
			kt.watchStall(k, e)
		}
		return true, false, ctx.Err()
	}
}

// heldInDB records that the caller, which holds keys, now holds them in
// the database too.
func (kt *keyTable) heldInDB(keys []string) {
	kt.mu.Lock()
	defer kt.mu.Unlock()
	for _, k := range keys {
		kt.m[k].dbHeld++
	}
}

// unlock releases keys; it does nothing for none.
func (kt *keyTable) unlock(keys []string) { kt.unlockHeld(keys, nil) }

// unlockHeld releases keys, of which the caller held dbHeld (recorded by
// heldInDB) in the database as well.
func (kt *keyTable) unlockHeld(keys, dbHeld []string) {
	if len(keys) == 0 {
		return
	}
	kt.mu.Lock()
	defer kt.mu.Unlock()
	for _, k := range dbHeld {
		kt.m[k].dbHeld--
	}
	for _, k := range keys {
		kt.handOn(k, kt.m[k])
	}
}

// handOn releases one holder of k: the last one passes k to the next
// waiter, or forgets k when nobody waits. The caller holds mu.
func (kt *keyTable) handOn(k string, e *keyEntry) {
	e.stall.progress++
	e.holders--
	if e.holders == 0 {
		if w := e.queue.pop(); w != nil {
			e.holders = 1
			w.admitted = true
			close(w.ch)
		}
	}
	kt.watchStall(k, e)
	if e.holders == 0 && e.queue.len() == 0 {
		delete(kt.m, k)
	}
}

// watchStall keeps a stall timer running on k while attempts wait for it,
// and stops it when none do; the caller holds mu.
func (kt *keyTable) watchStall(k string, e *keyEntry) {
	if gen, set := e.stall.need(e.queue.len() > 0); set {
		e.stall.stop = afterFunc(kt.clock, kt.stall(), func() { kt.stalled(k, e, gen) })
	}
}

// stalled runs a stall interval after the timer of k was set: if no holder
// released k meanwhile, the first waiter shares it.
func (kt *keyTable) stalled(k string, e *keyEntry, gen uint64) {
	kt.mu.Lock()
	defer kt.mu.Unlock()
	if kt.m[k] != e {
		return // k was forgotten, and e with it, as the timer fired
	}
	current, stalled := e.stall.fired(gen)
	if !current {
		return // a timer stopped, or replaced, as it fired
	}
	if stalled && e.queue.len() > 0 {
		w := e.queue.pop()
		e.holders++
		w.admitted = true
		w.shareDB = e.dbHeld > 0
		close(w.ch)
	}
	kt.watchStall(k, e)
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

// beginTx begins an attempt's transaction, through the backend's KeyLocker
// when the Runner holds its calls' keys in the database. unlock, when not
// nil, must be called once the transaction ended.
func (r *Runner[T]) beginTx(ctx context.Context, st *runState) (tx T, unlock func(), err error) {
	if r.locker == nil || len(st.pass.dbKeys) == 0 {
		tx, err = r.backend.Begin(ctx, r.begin)
		return tx, nil, err
	}
	tx, dbUnlock, err := r.locker.BeginLocked(ctx, r.begin, st.pass.dbKeys)
	if err != nil {
		return tx, nil, err
	}
	r.keys.heldInDB(st.pass.dbKeys)
	st.pass.dbHeld = true
	if dbUnlock == nil {
		return tx, nil, nil
	}
	// The closure reads the timeout, not st, which must stay on the stack.
	timeout := st.cfg.rollbackTimeout
	return tx, func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		dbUnlock(uctx)
	}, nil
}
