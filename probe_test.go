package txn_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
)

// errLockWait is what boundedDB's statements return when a bounded lock
// wait expired; errOther a permanent error of any other kind.
var (
	errLockWait = errors.New("lock wait reached its bound")
	errOther    = errors.New("some permanent error")
)

// boundedDB is a backend that can bound lock waits, and records how each
// transaction began.
type boundedDB struct {
	mu      sync.Mutex
	next    int
	bounded map[int]time.Duration // transaction → its bound; absent: Begin
}

func (b *boundedDB) Begin(context.Context, []txn.BeginOption[int]) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	return b.next, nil
}

func (b *boundedDB) BeginBoundedWait(_ context.Context, _ []txn.BeginOption[int], wait time.Duration) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	if b.bounded == nil {
		b.bounded = map[int]time.Duration{}
	}
	b.bounded[b.next] = wait
	return b.next, nil
}

func (b *boundedDB) LockWaitExpired(err error) bool      { return errors.Is(err, errLockWait) }
func (b *boundedDB) Commit(context.Context, int) error   { return nil }
func (b *boundedDB) Rollback(context.Context, int) error { return nil }
func (b *boundedDB) Classify(error) txn.Class            { return txn.ClassPermanent }

func (b *boundedDB) isBounded(tx int) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.bounded[tx]
	return d, ok
}

// probeScene starts a Runner over db in slow start with a pool of 4,
// commits one Run alone (the limit is then 2), and holds a second Run
// inside fn until release is called (once; later calls do nothing): a Run
// started meanwhile is admitted beside it, as a probe.
func probeScene(t *testing.T, db *boundedDB, opts ...txn.RunnerOption) (r *txn.Runner[int], release func()) {
	t.Helper()
	opts = append([]txn.RunnerOption{txn.WithClock(fakeclock.New(time.Now())), txn.WithBackoff(txn.Constant(0)), txn.Adaptive(4)}, opts...)
	r = txn.New[int](db, opts...)
	require.NoError(t, r.Run(context.Background(), func(context.Context, int) error { return nil }))
	inside, hold := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, r.Run(context.Background(), func(_ context.Context, tx int) error {
			_, bounded := db.isBounded(tx)
			assert.False(t, bounded, "the only attempt running is not bounded")
			close(inside)
			<-hold
			return nil
		}))
	}()
	<-inside
	var once sync.Once
	return r, func() { once.Do(func() { close(hold); <-done }) }
}

// A probe begins through BeginBoundedWait, and its bound expiring makes
// the Runner run fn again, as after a conflict.
func TestProbeBoundExpiredIsRetried(t *testing.T) {
	db := &boundedDB{}
	r, release := probeScene(t, db)
	defer release()
	var txs []int
	err := r.Run(context.Background(), func(_ context.Context, tx int) error {
		txs = append(txs, tx)
		if len(txs) == 1 {
			// The retry is admitted at the cut limit: let the Run
			// beside this one end.
			release()
			return errLockWait
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, txs, 2, "fn ran again after the probe's bound expired")
	wait, bounded := db.isBounded(txs[0])
	assert.True(t, bounded, "the probe began with its lock waits bounded")
	assert.GreaterOrEqual(t, wait, 20*time.Millisecond)
	assert.LessOrEqual(t, wait, 500*time.Millisecond)
}

// Whatever the error, only the bound's own expiry is retried, and an error
// fn marked permanent stays so.
func TestProbeOtherErrorsKeepTheirClass(t *testing.T) {
	for name, fnErr := range map[string]error{
		"permanent":                    errOther,
		"marked permanent":             txn.Permanent(errLockWait),
		"another Run's unknown commit": errors.Join(errLockWait, txn.ErrCommitUnknown),
	} {
		t.Run(name, func(t *testing.T) {
			db := &boundedDB{}
			r, release := probeScene(t, db)
			defer release()
			tries := 0
			var tx0 int
			err := r.Run(context.Background(), func(_ context.Context, tx int) error {
				tries++
				tx0 = tx
				return fnErr
			})
			require.Error(t, err)
			assert.Equal(t, 1, tries, "fn ran once")
			_, bounded := db.isBounded(tx0)
			assert.True(t, bounded, "it was a probe")
		})
	}
}

// The same error from an attempt that began unbounded is the backend's
// permanent error: the Runner retries only a bound it asked for.
func TestLockWaitExpiredOutsideProbeIsPermanent(t *testing.T) {
	for name, opts := range map[string][]txn.RunnerOption{
		"adaptive limit off": {txn.NoAdaptive()},
		"calm controller":    {txn.StartOpen()},
		"slow start, alone":  nil,
	} {
		t.Run(name, func(t *testing.T) {
			db := &boundedDB{}
			opts = append([]txn.RunnerOption{txn.WithClock(fakeclock.New(time.Now())), txn.Adaptive(4)}, opts...)
			r := txn.New[int](db, opts...)
			tries := 0
			err := r.Run(context.Background(), func(_ context.Context, tx int) error {
				tries++
				_, bounded := db.isBounded(tx)
				assert.False(t, bounded)
				return errLockWait
			})
			require.ErrorIs(t, err, errLockWait)
			assert.Equal(t, 1, tries)
		})
	}
}
