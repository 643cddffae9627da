package txn_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
	"github.com/txnkit/txn/internal/integrationtest"
)

// lockingDB is a fakedb.DB that holds conflict keys "in the database", as
// txnpgx and txnmysql do with txn.DatabaseKeys: a key is one lock, held by
// an attempt until its transaction ended, or by another process (lock).
type lockingDB struct {
	*fakedb.DB
	mu    sync.Mutex
	held  map[string]chan struct{} // closed when the key is released
	asked [][]string               // the keys of every BeginLocked
}

var _ txn.KeyLocker[*fakedb.Tx] = (*lockingDB)(nil)

func newLockingDB() *lockingDB {
	return &lockingDB{DB: fakedb.New(), held: map[string]chan struct{}{}}
}

// lock takes k, waiting for its holder while ctx lasts.
func (d *lockingDB) lock(ctx context.Context, k string) error {
	for {
		d.mu.Lock()
		ch, busy := d.held[k]
		if !busy {
			d.held[k] = make(chan struct{})
			d.mu.Unlock()
			return nil
		}
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *lockingDB) unlock(keys []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		close(d.held[k])
		delete(d.held, k)
	}
}

// askedFor reports whether a BeginLocked asked for exactly keys.
func (d *lockingDB) askedFor(keys ...string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.asked, func(a []string) bool { return slices.Equal(a, keys) })
}

func (d *lockingDB) isHeld(k string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.held[k]
	return ok
}

func (d *lockingDB) BeginLocked(ctx context.Context, opts []txn.BeginOption[*fakedb.Tx], keys []string) (*fakedb.Tx, func(context.Context), error) {
	d.mu.Lock()
	d.asked = append(d.asked, slices.Clone(keys))
	d.mu.Unlock()
	var took []string
	for _, k := range keys {
		if err := d.lock(ctx, k); err != nil {
			d.unlock(took)
			return nil, nil, err
		}
		took = append(took, k)
	}
	tx, err := d.Begin(ctx, opts)
	if err != nil {
		d.unlock(took)
		return nil, nil, err
	}
	return tx, func(context.Context) { d.unlock(took) }, nil
}

// Guarantee 7 with DatabaseKeys: fn starts a Run on the same Runner with a
// fresh context, naming its caller's key and one more. The stall escape
// lets it share the key in the process; it must share it in the database
// too, since its caller holds it there: it takes only the other key there,
// and commits.
func TestDatabaseKeysFreshRunInFnSharesHeldKey(t *testing.T) {
	checkNoLeak(t)
	db := newLockingDB()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.DatabaseKeys(), txn.WithClock(clk), txn.NoAdaptive())
	require.NoError(t, r.Err())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("order")
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return r.Run(ictx, func(ctx context.Context, tx *fakedb.Tx) error {
				tx.Write("audit")
				return nil
			}, txn.Keys("other", "k"))
		}, txn.Keys("k"), txn.MaxAttempts(1))
	}()
	require.NoError(t, integrationtest.AdvanceStalls(t, clk, txn.StallFloor, done))
	assert.Equal(t, 1, db.Committed("order"))
	assert.Equal(t, 1, db.Committed("audit"))
	assert.True(t, db.askedFor("k"), "the outer Run took its key in the database")
	assert.True(t, db.askedFor("other"), "the inner Run took only the key it did not share")
	assert.False(t, db.askedFor("k", "other"))
	assert.False(t, db.isHeld("k"))
	assert.False(t, db.isHeld("other"))
	assert.Zero(t, r.AdmissionStats().Keys)
	assert.Zero(t, clk.Timers())
}

// While the holder of a key in this process waits in the database for
// another process, the Runs queued behind it on that key are no stall:
// nothing of this process can release the key, and an escape would only
// send them to wait in the database too, each on a connection of the pool.
// They stay in the process's queue however long it lasts, and enter fn
// one at a time once the other process released the key.
func TestDatabaseKeysNoStallEscapeWhileHolderWaitsInDatabase(t *testing.T) {
	checkNoLeak(t)
	db := newLockingDB()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.DatabaseKeys(), txn.WithClock(clk), txn.NoAdaptive())
	require.NoError(t, r.Err())
	require.NoError(t, db.lock(context.Background(), "k")) // another process
	var mu sync.Mutex
	inFn, most := 0, 0
	otherHolds := true
	var entered []bool
	fn := func(ctx context.Context, tx *fakedb.Tx) error {
		mu.Lock()
		inFn++
		most = max(most, inFn)
		entered = append(entered, otherHolds)
		mu.Unlock()
		tx.Write("k")
		mu.Lock()
		inFn--
		mu.Unlock()
		return nil
	}
	const runs = 4
	done := make(chan error, runs)
	go func() { done <- r.Run(context.Background(), fn, txn.Keys("k")) }()
	waitFor(t, func() bool { return db.askedFor("k") })
	for range runs - 1 {
		go func() { done <- r.Run(context.Background(), fn, txn.Keys("k")) }()
	}
	waitFor(t, func() bool { return txn.KeyWaiters(r, "k") == runs-1 })
	for range 5 {
		clk.Advance(time.Hour)
	}
	assert.Equal(t, runs-1, txn.KeyWaiters(r, "k"), "a stall escape admitted a Run while the holder waits for another process")
	db.mu.Lock()
	asked := len(db.asked)
	db.mu.Unlock()
	assert.Equal(t, 1, asked, "Runs wait in the database for the key")
	mu.Lock()
	otherHolds = false
	mu.Unlock()
	db.unlock([]string{"k"})
	for range runs {
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "a Run did not return")
		}
	}
	assert.Equal(t, []bool{false, false, false, false}, entered, "an attempt ran while another process held the key")
	assert.Equal(t, 1, most, "attempts on the key overlapped")
	assert.Equal(t, runs, db.Committed("k"))
	assert.False(t, db.isHeld("k"))
	assert.Zero(t, r.AdmissionStats().Keys)
	assert.Zero(t, clk.Timers())
}
