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
// it holds them here, and the stall escape looks at where the holders are.
// While none of them has begun its transaction (each still waits in the
// database, for another process, or for a slot or a connection), nothing
// of this process can release the key, so no waiter is admitted: an
// escape would only send it to wait in the database as well, on a
// connection of the pool (the limit's own escape, and the context, still
// apply). Once a holder runs its transaction, it may be waiting on a
// waiter (a Run started inside fn with a fresh context, on its caller's
// key), and the escape admits the first waiter as without DatabaseKeys.
// That waiter shares the database lock when a holder holds it: it does not
// take the key in the database, where it would wait for the very holder
// it shares with. When no holder holds it any more (the one left shares
// it), the waiter takes it there as usual.

// keyTable serializes attempts by conflict key.
type keyTable struct {
	mu sync.Mutex
	m  map[string]*keyEntry

	// Set by New: the clock that times stalls and the stall interval, and
	// whether the Runner holds keys in the database (DatabaseKeys).
	clock Clock
	stall func() time.Duration
	db    bool
}

// keyEntry is one key's holders and FIFO of waiters.
type keyEntry struct {
	holders int // 1, or more after stall escapes
	queue   waitQueue
	// With DatabaseKeys: begun counts the holders that have begun their
	// transaction, dbHeld those of them that hold the key in the database.
	begun, dbHeld int

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

// begin records that the caller, which holds keys, has begun its
// transaction, holding dbKeys (some of keys) in the database.
func (kt *keyTable) begin(keys, dbKeys []string) {
	kt.mu.Lock()
	defer kt.mu.Unlock()
	for _, k := range keys {
		kt.m[k].begun++
	}
	for _, k := range dbKeys {
		kt.m[k].dbHeld++
	}
}

// unlock releases keys; it does nothing for none.
func (kt *keyTable) unlock(keys []string) { kt.unlockBegun(keys, nil, false) }

// unlockBegun releases keys, of which the caller held dbKeys in the
// database; begun tells whether it had recorded both with begin.
func (kt *keyTable) unlockBegun(keys, dbKeys []string, begun bool) {
	if len(keys) == 0 {
		return
	}
	kt.mu.Lock()
	defer kt.mu.Unlock()
	if begun {
		for _, k := range keys {
			kt.m[k].begun--
		}
		for _, k := range dbKeys {
			kt.m[k].dbHeld--
		}
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
	if stalled && e.queue.len() > 0 && (!kt.db || e.begun > 0) {
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

// mayBound reports whether the next attempt of st may begin with its lock
// waits bounded as a probe: not after a bound already cost the Run an
// attempt, and not when no attempt would be left to run fn again after the
// bound expired (MaxAttempts), where the bound would turn a lock wait the
// Run could have outlasted into its failure.
func (st *runState) mayBound() bool {
	return !st.boundSpent && (st.cfg.maxAttempts == 0 || st.tries+1 < st.cfg.maxAttempts)
}

// beginTx begins an attempt's transaction, through the backend's KeyLocker
// when the Runner holds its calls' keys in the database. unlock, when not
// nil, must be called once the transaction ended.
func (r *Runner[T]) beginTx(ctx context.Context, st *runState) (tx T, unlock func(), err error) {
	if r.locker == nil || len(st.keys) == 0 {
		if p := &st.pass; p.limited && p.grant.probeWait > 0 && r.bounder != nil && st.mayBound() {
			p.bounded = true
			tx, err = r.bounder.BeginBoundedWait(ctx, r.begin, p.grant.probeWait)
			return tx, nil, err
		}
		tx, err = r.backend.Begin(ctx, r.begin)
		return tx, nil, err
	}
	p := &st.pass
	var dbUnlock func(context.Context)
	if len(p.dbKeys) == 0 {
		// Every key is shared with a holder that holds it in the
		// database.
		tx, err = r.backend.Begin(ctx, r.begin)
	} else {
		tx, dbUnlock, err = r.locker.BeginLocked(ctx, r.begin, p.dbKeys)
	}
	if err != nil {
		return tx, nil, err
	}
	r.keys.begin(p.keys, p.dbKeys)
	p.begun = true
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
