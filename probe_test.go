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
	mu        sync.Mutex
	next      int
	bounded   map[int]time.Duration // transaction → its bound; absent: Begin
	committed []int
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

func (b *boundedDB) LockWaitExpired(err error) bool { return errors.Is(err, errLockWait) }
func (b *boundedDB) Commit(_ context.Context, tx int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.committed = append(b.committed, tx)
	return nil
}

func (b *boundedDB) BeginSavepoint(_ context.Context, tx int, _ string) (int, error) {
	return tx, nil
}
func (b *boundedDB) ReleaseSavepoint(context.Context, int, string) error    { return nil }
func (b *boundedDB) RollbackToSavepoint(context.Context, int, string) error { return nil }
func (b *boundedDB) Rollback(context.Context, int) error                    { return nil }
func (b *boundedDB) Classify(error) txn.Class                               { return txn.ClassPermanent }

func (b *boundedDB) isBounded(tx int) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.bounded[tx]
	return d, ok
}

// probeScene starts a Runner over db with a pool of 4 and makes it
// contended: one Run conflicts once (a cut, to 1) and then commits, and
// another commits at once, which raises the limit to 2. It then holds a second Run inside fn until release is
// called (once; later calls do nothing): a Run started meanwhile is
// admitted beside it, as a probe.
func probeScene(t *testing.T, db *boundedDB, opts ...txn.RunnerOption) (r *txn.Runner[int], release func()) {
	t.Helper()
	opts = append([]txn.RunnerOption{txn.WithClock(fakeclock.New(time.Now())), txn.WithBackoff(txn.Constant(0)), txn.Adaptive(4)}, opts...)
	r = txn.New[int](db, opts...)
	tries := 0
	require.NoError(t, r.Run(context.Background(), func(context.Context, int) error {
		if tries++; tries == 1 {
			return txn.Retry(errors.New("a conflict"))
		}
		return nil
	}))
	// The main lane learns from first attempts: one that commits raises
	// the limit to 2.
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

// A probe's bound expiring inside a savepoint or a nested Run loses the
// whole transaction, as a conflict there does: fn cannot swallow it and
// commit without the statement that waited.
func TestProbeBoundExpiredInSavepointLosesTransaction(t *testing.T) {
	for name, nested := range map[string]func(*txn.Runner[int], context.Context, func(context.Context, int) error) error{
		"Savepoint": func(_ *txn.Runner[int], ctx context.Context, fn func(context.Context, int) error) error {
			return txn.Savepoint(ctx, fn)
		},
		"nested Run": func(r *txn.Runner[int], ctx context.Context, fn func(context.Context, int) error) error {
			return r.Run(ctx, fn)
		},
	} {
		t.Run(name, func(t *testing.T) {
			db := &boundedDB{}
			r, release := probeScene(t, db)
			defer release()
			var txs []int
			err := r.Run(context.Background(), func(ctx context.Context, tx int) error {
				txs = append(txs, tx)
				first := len(txs) == 1
				if first {
					release()
				}
				serr := nested(r, ctx, func(context.Context, int) error {
					if first {
						return errLockWait
					}
					return nil
				})
				_ = serr // swallowed, as a business failure
				return nil
			})
			require.NoError(t, err)
			require.Len(t, txs, 2, "the transaction was lost and fn ran again")
			db.mu.Lock()
			defer db.mu.Unlock()
			assert.NotContains(t, db.committed, txs[0], "the probe that lost its wait was not committed")
			assert.Contains(t, db.committed, txs[1])
		})
	}
}

// A Run with no attempt left after this one begins it unbounded: the
// bound would turn a lock wait the Run could outlast into its failure.
func TestProbeNotBoundedOnLastAttempt(t *testing.T) {
	for _, tc := range []struct {
		max     int
		bounded bool
	}{{1, false}, {2, true}} {
		db := &boundedDB{}
		r, release := probeScene(t, db)
		var tx0 int
		err := r.Run(context.Background(), func(_ context.Context, tx int) error {
			tx0 = tx
			return nil
		}, txn.MaxAttempts(tc.max))
		release()
		require.NoError(t, err)
		_, bounded := db.isBounded(tx0)
		assert.Equal(t, tc.bounded, bounded, "MaxAttempts(%d)", tc.max)
	}
}
