package txn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

// Tests of the promise that Run is never wrong whatever fn does: fn that
// exits its goroutine, panics with odd values, keeps its context, returns
// typed nils or the library's own sentinels, marks errors twice, or starts
// other Runs from inside fn and from OnCommit callbacks.

// advRunner returns a fake database and a Runner over it with a fake clock,
// conflict keys usable and the adaptive limit on (slow start: limit 1).
func advRunner(t *testing.T, savepoints bool, opts ...txn.RunnerOption) (*fakedb.DB, *fakeclock.Clock, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	opts = append([]txn.RunnerOption{txn.WithClock(clk), txn.Seed(1), txn.WithBackoff(txn.Constant(time.Millisecond))}, opts...)
	var r *txn.Runner[*fakedb.Tx]
	if savepoints {
		r = txn.New[*fakedb.Tx](db.WithSavepoints(), opts...)
	} else {
		r = txn.New[*fakedb.Tx](db, opts...)
	}
	require.NoError(t, r.Err())
	return db, clk, r
}

// requireIdle checks that r holds no slot and no key, and that a Run naming
// key is admitted at once and commits.
func requireIdle(t *testing.T, r *txn.Runner[*fakedb.Tx], db *fakedb.DB, key string) {
	t.Helper()
	st := r.AdmissionStats()
	assert.Zero(t, st.InFlight, "an admission slot is still held")
	assert.Zero(t, st.RetryInFlight, "a retry-lane slot is still held")
	assert.Zero(t, st.Keys, "a conflict key is still held")
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("probe " + key)
			return nil
		}, txn.Keys(key))
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "a Run on the key waits for an attempt that ended")
	}
}

// runOnGoroutine runs fn's Run on a goroutine of its own and reports
// whether Run returned (it does not when fn exits the goroutine) and what
// it recovered.
func runOnGoroutine(run func() error) (returned bool, err error, panicked any) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { panicked = recover() }()
		err = run()
		returned = true
	}()
	<-done
	return returned, err, panicked
}

// TestAdversarialGoexit: fn (or a Savepoint or nested Run inside it) calls
// runtime.Goexit, as t.FailNow in fn does. The transaction is rolled back,
// nothing is committed, no OnCommit callback runs, and the attempt's slot
// and key are released.
func TestAdversarialGoexit(t *testing.T) {
	for _, where := range []string{"fn", "Savepoint", "nested Run", "after OnCommit in a released Savepoint"} {
		t.Run(where, func(t *testing.T) {
			checkNoLeak(t)
			db, _, r := advRunner(t, true)
			var cbs atomic.Int32
			calls := 0
			returned, _, p := runOnGoroutine(func() error {
				return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					calls++
					tx.Write("outer")
					require.NoError(t, txn.OnCommit(ctx, func() { cbs.Add(1) }))
					body := func(ctx context.Context, tx *fakedb.Tx) error {
						tx.Write("inner")
						require.NoError(t, txn.OnCommit(ctx, func() { cbs.Add(1) }))
						runtime.Goexit()
						return nil
					}
					switch where {
					case "fn":
						runtime.Goexit()
					case "Savepoint":
						return txn.Savepoint(ctx, body)
					case "nested Run":
						return r.Run(ctx, body)
					default:
						require.NoError(t, txn.Savepoint(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
							return txn.OnCommit(ctx, func() { cbs.Add(1) })
						}))
						runtime.Goexit()
					}
					return nil
				}, txn.Keys("k"), txn.Idempotent())
			})
			assert.False(t, returned, "Run cannot return once fn's goroutine exits")
			assert.Nil(t, p)
			assert.Equal(t, 1, calls, "fn is not run again")
			assert.Zero(t, cbs.Load(), "no OnCommit callback runs")
			assert.Zero(t, db.Committed("outer"))
			assert.Zero(t, db.Committed("inner"))
			assert.Contains(t, db.Log(), "rollback 1")
			assert.NotContains(t, db.Log(), "commit 1")
			requireIdle(t, r, db, "k")
		})
	}
}

// TestAdversarialPanicValues: fn panics with nil, with a marked or sentinel
// error, or after registering OnCommit callbacks (directly and in a released
// savepoint), in a Run with keys that is Idempotent. The panic reaches
// Run's caller with its value, fn ran once, nothing is committed, no
// callback runs, and slot and key are released.
func TestAdversarialPanicValues(t *testing.T) {
	retryVal := txn.Retry(errConflict)
	for name, tc := range map[string]struct {
		value any
		check func(t *testing.T, got any)
	}{
		"nil": {nil, func(t *testing.T, got any) {
			var pe *runtime.PanicNilError
			assert.ErrorAs(t, got.(error), &pe, "panic(nil) reaches the caller as a *runtime.PanicNilError")
		}},
		"Retry-marked error": {retryVal, func(t *testing.T, got any) { assert.Same(t, retryVal, got) }},
		"ErrCommitUnknown":   {txn.ErrCommitUnknown, func(t *testing.T, got any) { assert.Same(t, txn.ErrCommitUnknown, got) }},
		"context.Canceled":   {context.Canceled, func(t *testing.T, got any) { assert.Same(t, context.Canceled, got) }},
		"string":             {"boom", func(t *testing.T, got any) { assert.Equal(t, "boom", got) }},
	} {
		t.Run(name, func(t *testing.T) {
			db, _, r := advRunner(t, true)
			var cbs atomic.Int32
			calls := 0
			returned, _, p := runOnGoroutine(func() error {
				return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					calls++
					tx.Write("k")
					require.NoError(t, txn.OnCommit(ctx, func() { cbs.Add(1) }))
					require.NoError(t, txn.Savepoint(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
						tx.Write("sp")
						return txn.OnCommit(ctx, func() { cbs.Add(1) })
					}))
					panic(tc.value)
				}, txn.Keys("k"), txn.Idempotent())
			})
			assert.False(t, returned)
			require.NotNil(t, p, "the panic reaches Run's caller")
			tc.check(t, p)
			assert.Equal(t, 1, calls, "a panic is never retried")
			assert.Zero(t, cbs.Load())
			assert.Zero(t, db.Committed("k"))
			assert.Zero(t, db.Committed("sp"))
			assert.Equal(t, "rollback 1", db.Log()[len(db.Log())-1])
			requireIdle(t, r, db, "k")
		})
	}
}

// TestAdversarialContextKeptPastPanic: fn hands its context to code that
// outlives the attempt (a goroutine, a deferred recovery handler) and
// then panics or exits its goroutine. The transaction has ended, so, as
// for a context kept past a Run that returned, the context must carry no
// transaction: TxFrom reports false, OnCommit refuses it, and a Run on it
// starts a new outermost transaction that commits and runs its callback.
func TestAdversarialContextKeptPastPanic(t *testing.T) {
	for _, exit := range []string{"panic", "Goexit"} {
		for _, savepoints := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s savepoints=%v", exit, savepoints), func(t *testing.T) {
				db, _, r := advRunner(t, savepoints, txn.NoAdaptive())
				kept := make(chan context.Context, 1)
				returned, _, _ := runOnGoroutine(func() error {
					return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
						kept <- ctx
						if exit == "panic" {
							panic("boom")
						}
						runtime.Goexit()
						return nil
					})
				})
				require.False(t, returned)
				ctx := <-kept
				_, ok := txn.TxFrom[*fakedb.Tx](ctx)
				assert.False(t, ok, "TxFrom finds the rolled-back transaction")
				assert.ErrorIs(t, txn.OnCommit(ctx, func() {}), txn.ErrNoTransaction,
					"OnCommit accepts a callback for a transaction that was rolled back")
				ran := false
				err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
					tx.Write("late")
					return txn.OnCommit(ctx, func() { ran = true })
				})
				require.NoError(t, err)
				assert.Equal(t, 1, db.Committed("late"), "Run returned nil but its write was not committed: %v", db.Log())
				assert.True(t, ran, "Run returned nil but its OnCommit callback never ran")
			})
		}
	}
}

// myErr is an error type whose Error method reads its receiver, so that it
// panics on a nil pointer.
type myErr struct{ msg string }

func (e *myErr) Error() string { return "my error: " + e.msg }

// TestAdversarialTypedNilReturned: fn returns a nil *myErr as its error (the
// classic typed-nil mistake), bare, through Do, or in a nested Run. It is a
// non-nil error: Run must not commit, must not panic while classifying or
// observing it, and returns it as a permanent error after one attempt.
func TestAdversarialTypedNilReturned(t *testing.T) {
	var nilMy *myErr
	t.Run("Run", func(t *testing.T) {
		db, _, r := advRunner(t, true, txn.WithObserver(txn.SlogObserver(slog.New(slog.NewTextHandler(io.Discard, nil)))))
		calls := 0
		var err error
		require.NotPanics(t, func() {
			err = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				calls++
				tx.Write("k")
				return nilMy
			}, txn.Keys("k"))
		})
		require.Error(t, err)
		assert.Equal(t, error(nilMy), err, "returned as it is")
		assert.Equal(t, 1, calls)
		assert.Zero(t, db.Committed("k"))
		requireIdle(t, r, db, "k")
	})
	t.Run("Do", func(t *testing.T) {
		db, _, r := advRunner(t, false)
		var v int
		var err error
		require.NotPanics(t, func() {
			v, err = txn.Do(context.Background(), r, func(ctx context.Context, tx *fakedb.Tx) (int, error) {
				tx.Write("k")
				return 7, nilMy
			})
		})
		require.Error(t, err)
		assert.Zero(t, v, "no value from an attempt that did not commit")
		assert.Zero(t, db.Committed("k"))
	})
	t.Run("nested Run", func(t *testing.T) {
		db, _, r := advRunner(t, true)
		var inner error
		require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("outer")
			inner = r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
				tx.Write("inner")
				return nilMy
			})
			return nil
		}))
		assert.Equal(t, error(nilMy), inner)
		assert.Equal(t, 1, db.Committed("outer"))
		assert.Zero(t, db.Committed("inner"), "the savepoint of the failed nested Run is rolled back")
	})
}

// TestAdversarialRetryOfTypedNilGiveUpMessage: fn returns Retry of a nil
// *myErr. Retry(nil) returns nil, but a typed nil is marked, so fn is
// retried until the attempt limit. The GiveUpError Run returns is the
// library's own: building its message must not call the typed nil's Error
// method (as typednil_test.go requires for wrapped typed nils).
func TestAdversarialRetryOfTypedNilGiveUpMessage(t *testing.T) {
	var nilMy *myErr
	db, _, r := advRunner(t, false)
	calls := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		calls++
		tx.Write("k")
		return txn.Retry(nilMy)
	}, txn.MaxAttempts(2))
	assert.Equal(t, 2, calls)
	assert.Zero(t, db.Committed("k"))
	require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	require.NotPanics(t, func() { _ = err.Error() })
}

// TestAdversarialOnCommitRacesFnReturn: a goroutine started by fn registers
// an OnCommit callback while fn returns. Whichever wins, OnCommit's result
// tells the truth: a callback it accepted runs exactly once, after the
// commit; a refused one never runs. Attempts that fail never run theirs.
func TestAdversarialOnCommitRacesFnReturn(t *testing.T) {
	checkNoLeak(t)
	db, _, r := advRunner(t, true, txn.NoAdaptive())
	for i := 0; i < 200; i++ {
		fail := i%3 == 0
		var ran, accepted atomic.Int32
		var wg sync.WaitGroup
		calls := 0
		err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			attempt := calls
			tx.Write("k")
			wg.Add(1)
			go func() {
				defer wg.Done()
				if txn.OnCommit(ctx, func() {
					assert.Equal(t, "commit", lastCommit(db), "callback before the commit")
					if fail && attempt == 1 {
						assert.Fail(t, "callback of a failed attempt ran")
					}
					ran.Add(1)
				}) == nil {
					accepted.Add(1)
				}
			}()
			if fail && attempt == 1 {
				return errConflict
			}
			return nil
		})
		require.NoError(t, err)
		wg.Wait()
		if fail {
			assert.LessOrEqual(t, ran.Load(), int32(1))
			assert.LessOrEqual(t, ran.Load(), accepted.Load())
		} else {
			assert.Equal(t, accepted.Load(), ran.Load(), "iteration %d: accepted %d callbacks, ran %d", i, accepted.Load(), ran.Load())
		}
	}
	assert.Equal(t, 200, db.Committed("k"))
}

// lastCommit returns "commit" when the last begin or commit in db's log is a
// commit.
func lastCommit(db *fakedb.DB) string {
	log := db.Log()
	for i := len(log) - 1; i >= 0; i-- {
		switch {
		case len(log[i]) >= 7 && log[i][:7] == "commit ":
			return "commit"
		case len(log[i]) >= 6 && log[i][:6] == "begin ":
			return "begin"
		}
	}
	return ""
}

// TestAdversarialStaleAttemptContext: fn keeps the context of its first
// attempt and uses it in the second. That attempt's transaction has ended:
// OnCommit, Savepoint and TxFrom refuse it, its callbacks never run, and a
// Run on it is a separate outermost transaction, not a part of the second
// attempt.
func TestAdversarialStaleAttemptContext(t *testing.T) {
	db, _, r := advRunner(t, true, txn.NoAdaptive())
	var first context.Context
	var firstTx *fakedb.Tx
	var order []string
	calls := 0
	var staleOnCommit, staleSavepoint, staleRun error
	staleSpRan := false
	var staleTxFrom bool
	var staleRunTx *fakedb.Tx
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		calls++
		if calls == 1 {
			first, firstTx = ctx, tx
			require.NoError(t, txn.OnCommit(ctx, func() { order = append(order, "attempt 1") }))
			tx.Write("k")
			return errConflict
		}
		_, staleTxFrom = txn.TxFrom[*fakedb.Tx](first)
		staleOnCommit = txn.OnCommit(first, func() { order = append(order, "stale") })
		staleSavepoint = txn.Savepoint(first, func(context.Context, *fakedb.Tx) error { staleSpRan = true; return nil })
		staleRun = r.Run(first, func(ctx context.Context, tx2 *fakedb.Tx) error {
			staleRunTx = tx2
			tx2.Write("side")
			return txn.OnCommit(ctx, func() { order = append(order, "side") })
		})
		require.NoError(t, txn.OnCommit(ctx, func() { order = append(order, "attempt 2") }))
		tx.Write("k")
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 2, calls)
	assert.False(t, staleTxFrom)
	assert.ErrorIs(t, staleOnCommit, txn.ErrNoTransaction)
	assert.ErrorIs(t, staleSavepoint, txn.ErrNoTransaction)
	assert.False(t, staleSpRan)
	require.NoError(t, staleRun)
	require.NotNil(t, staleRunTx)
	assert.NotSame(t, firstTx, staleRunTx)
	assert.Equal(t, 3, staleRunTx.ID, "a transaction of its own, begun inside attempt 2")
	assert.Equal(t, 1, db.Committed("k"))
	assert.Equal(t, 1, db.Committed("side"))
	assert.Equal(t, []string{"side", "attempt 2"}, order)
}

// TestAdversarialOnCommitCallbackPanics: a callback panics after the commit.
// The commit stands, fn is not run again, the callbacks registered after
// it still run, the panic reaches Run's caller, and the attempt's slot and
// key were released before the callbacks ran.
func TestAdversarialOnCommitCallbackPanics(t *testing.T) {
	db, _, r := advRunner(t, true)
	calls := 0
	var ran []string
	returned, _, p := runOnGoroutine(func() error {
		return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			tx.Write("k")
			for _, cb := range []func(){
				func() { ran = append(ran, "first") },
				func() { ran = append(ran, "panics"); panic("callback boom") },
				func() { ran = append(ran, "after") },
			} {
				if err := txn.OnCommit(ctx, cb); err != nil {
					return err
				}
			}
			return nil
		}, txn.Keys("k"), txn.Idempotent())
	})
	assert.False(t, returned)
	assert.Equal(t, "callback boom", p)
	assert.Equal(t, []string{"first", "panics", "after"}, ran, "a callback that panics does not keep the later ones from running, once each, in order")
	assert.Equal(t, 1, calls)
	assert.Equal(t, 1, db.Committed("k"), "the commit stands")
	requireIdle(t, r, db, "k")
}

// TestAdversarialOnCommitCallbackRunsAgain: an OnCommit callback calls Run
// on the same Runner, with fn's (ended) context and with a fresh one, with
// and without the same conflict key, on a Runner whose adaptive limit is 1
// (slow start). Each is a new transaction, admitted at once: the attempt
// released its slot and key before its callbacks ran. No clock is
// advanced, so a wait for the stall escape would hang the test.
func TestAdversarialOnCommitCallbackRunsAgain(t *testing.T) {
	checkNoLeak(t)
	db, clk, r := advRunner(t, true)
	require.Equal(t, 1, r.AdmissionStats().Limit)
	var errs []error
	var inner atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("outer")
			return txn.OnCommit(ctx, func() {
				for _, c := range []context.Context{ctx, context.Background()} {
					for _, opts := range [][]txn.CallOption{nil, {txn.Keys("k")}} {
						errs = append(errs, r.Run(c, func(ctx context.Context, tx *fakedb.Tx) error {
							tx.Write("again")
							return txn.OnCommit(ctx, func() { inner.Add(1) })
						}, opts...))
					}
				}
			})
		}, txn.Keys("k"))
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "a Run in an OnCommit callback waits for the attempt that ran the callback")
	}
	require.Len(t, errs, 4)
	for _, err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, 1, db.Committed("outer"))
	assert.Equal(t, 4, db.Committed("again"))
	assert.Equal(t, int32(4), inner.Load())
	assert.Empty(t, clk.Sleeps())
	requireIdle(t, r, db, "k")
}

// TestAdversarialFreshRunInFnWithKeysAndLimitOne: fn starts a Run on the
// same Runner with context.Background(), both naming the same key, on a
// Runner whose adaptive limit contention cut to 1. The inner Run waits
// first for the key, then for the slot, both held by its caller; the stall
// escape admits it for each, so both commit and nothing is left held.
func TestAdversarialFreshRunInFnWithKeysAndLimitOne(t *testing.T) {
	checkNoLeak(t)
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.WithBackoff(txn.Constant(0)))
	require.NoError(t, r.Err())
	shrinkToOne(t, r)
	done := make(chan error, 1)
	go func() {
		done <- r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("order")
			return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				tx.Write("audit")
				return nil
			}, txn.Keys("k"))
		}, txn.Keys("k"))
	}()
	waitFor(t, func() bool { return txn.KeyWaiters(r, "k") == 1 })
	clk.Advance(txn.StallFloor)
	waitFor(t, func() bool { return r.AdmissionStats().Queued == 1 })
	clk.Advance(txn.StallFloor)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		require.FailNow(t, "the fresh Run inside fn was not admitted")
	}
	assert.Equal(t, 1, db.Committed("order"))
	assert.Equal(t, 1, db.Committed("audit"))
	assert.Zero(t, r.AdmissionStats().InFlight)
	assert.Zero(t, r.AdmissionStats().Keys)
	assert.Zero(t, clk.Timers())
}

// TestAdversarialFnIgnoresCancellation: the caller's context ends while fn
// runs and fn goes on regardless, then returns nil, a retryable, a
// connection or a Retry-marked error, in an Idempotent call. Run commits
// nothing, runs fn once, sleeps not at all and does not report an unknown
// outcome.
func TestAdversarialFnIgnoresCancellation(t *testing.T) {
	for name, ret := range map[string]error{
		"nil":             nil,
		"retryable":       errConflict,
		"connection lost": errConnLost,
		"Retry":           txn.Retry(errors.New("stale version")),
	} {
		t.Run(name, func(t *testing.T) {
			db, clk, r := advRunner(t, true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
				calls++
				tx.Write("k")
				cancel()
				tx.Write("after cancel")
				return ret
			}, txn.Idempotent(), txn.Keys("k"), txn.MaxAttempts(0))
			require.Error(t, err)
			assert.ErrorIs(t, err, context.Canceled)
			assert.NotErrorIs(t, err, txn.ErrCommitUnknown)
			assert.Equal(t, 1, calls)
			assert.Empty(t, clk.Sleeps())
			assert.Zero(t, db.Committed("k"))
			assert.Zero(t, db.Committed("after cancel"))
			requireIdle(t, r, db, "k")
		})
	}
}

// TestAdversarialFnReturnsLibrarySentinels: fn returns, with a live
// context and a live transaction, its own errors that wrap the library's
// sentinels and the context's errors. They are fn's errors, permanent:
// returned as they are after one attempt and a rollback, even for an
// Idempotent call, and never taken for a give-up of Run's own.
func TestAdversarialFnReturnsLibrarySentinels(t *testing.T) {
	for _, sentinel := range []error{
		txn.ErrCommitUnknown, txn.ErrAttemptsExhausted, txn.ErrTxDone, txn.ErrFnFinishedTx,
		txn.ErrNoTransaction, context.Canceled, context.DeadlineExceeded,
	} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			db, clk, r := advRunner(t, true)
			fnErr := fmt.Errorf("my repo: %w", sentinel)
			calls := 0
			err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				calls++
				tx.Write("k")
				return fnErr
			}, txn.Idempotent())
			assert.Same(t, fnErr, err)
			var gu *txn.GiveUpError
			assert.False(t, errors.As(err, &gu))
			assert.Equal(t, 1, calls)
			assert.Empty(t, clk.Sleeps())
			assert.Zero(t, db.Committed("k"))
			assert.Equal(t, []string{"begin 1", "rollback 1"}, db.Log())
		})
	}
}

// TestAdversarialNestedMarks: Retry and Permanent applied on top of each
// other, or over an error the backend classifies otherwise. The outermost
// mark, the last one fn applied, decides.
func TestAdversarialNestedMarks(t *testing.T) {
	base := errors.New("base")
	for name, tc := range map[string]struct {
		err   error
		retry bool
	}{
		"Retry(Permanent(err))":         {txn.Retry(txn.Permanent(base)), true},
		"Permanent(Retry(err))":         {txn.Permanent(txn.Retry(base)), false},
		"wrapped Permanent(Retry(err))": {fmt.Errorf("ctx: %w", txn.Permanent(txn.Retry(base))), false},
		"Retry(Retry(err))":             {txn.Retry(txn.Retry(base)), true},
		"Permanent(retryable db error)": {txn.Permanent(errConflict), false},
		"Retry(permanent db error)":     {txn.Retry(errBad), true},
		"Permanent(connection lost)":    {txn.Permanent(errConnLost), false},
	} {
		t.Run(name, func(t *testing.T) {
			db, _, r := advRunner(t, false)
			calls := 0
			err := r.Run(context.Background(), failing(&calls, "k", tc.err), txn.MaxAttempts(3))
			if tc.retry {
				require.NoError(t, err)
				assert.Equal(t, 2, calls)
				assert.Equal(t, 1, db.Committed("k"))
			} else {
				assert.Same(t, tc.err, err)
				assert.Equal(t, 1, calls)
				assert.Zero(t, db.Committed("k"))
			}
		})
	}
}

// TestAdversarialOddOptions: MaxAttempts(1) with a retryable error, and
// with a commit-retryable commit; zero limits; duplicate, unsorted keys;
// nil options; and invalid call options, which must fail before fn runs.
func TestAdversarialOddOptions(t *testing.T) {
	ctx := context.Background()
	t.Run("MaxAttempts(1) retryable", func(t *testing.T) {
		db, clk, r := advRunner(t, false)
		calls := 0
		err := r.Run(ctx, failing(&calls, "k", errConflict), txn.MaxAttempts(1))
		assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
		assert.ErrorIs(t, err, errConflict)
		assert.NotErrorIs(t, err, txn.ErrCommitUnknown)
		assert.Equal(t, 1, calls)
		assert.Empty(t, clk.Sleeps())
		assert.Zero(t, db.Committed("k"))
	})
	t.Run("MaxAttempts(1) commit-retryable commit", func(t *testing.T) {
		db, clk, r := advRunner(t, false)
		db.FailCommit(errCommitRe)
		calls := 0
		err := r.Run(ctx, failing(&calls, "k"), txn.MaxAttempts(1))
		assert.ErrorIs(t, err, txn.ErrCommitUnknown)
		assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
		assert.Equal(t, 1, calls)
		assert.Empty(t, clk.Sleeps())
		assert.Equal(t, []string{"begin 1", "commit 1 failed"}, db.Log(), "the commit is sent once")
	})
	t.Run("zero limits lift them", func(t *testing.T) {
		db, _, r := advRunner(t, false, txn.WithBackoff(txn.Constant(time.Hour)))
		calls := 0
		require.NoError(t, r.Run(ctx, failing(&calls, "k", repeat(errConflict, 15)...), txn.MaxAttempts(0), txn.MaxElapsed(0)))
		assert.Equal(t, 16, calls)
		assert.Equal(t, 1, db.Committed("k"))
	})
	t.Run("duplicate unsorted keys", func(t *testing.T) {
		db, _, r := advRunner(t, false)
		done := make(chan error, 1)
		go func() {
			calls := 0
			done <- r.Run(ctx, failing(&calls, "k", errConflict), txn.Keys("b", "a", "b", "a"), txn.Keys("b", "a", "b"))
		}()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "a call naming a key twice waits for itself")
		}
		assert.Equal(t, 1, db.Committed("k"))
		requireIdle(t, r, db, "a")
		requireIdle(t, r, db, "b")
	})
	t.Run("nil options", func(t *testing.T) {
		db, _, r := advRunner(t, false)
		calls := 0
		require.NoError(t, r.Run(ctx, failing(&calls, "k"), nil, txn.CallOption(nil), txn.Keys()))
		assert.Equal(t, 1, db.Committed("k"))
	})
	for name, opt := range map[string]txn.CallOption{
		"MaxAttempts(-1)":     txn.MaxAttempts(-1),
		"MaxElapsed(-1)":      txn.MaxElapsed(-1),
		"RollbackTimeout(0)":  txn.RollbackTimeout(0),
		"RollbackTimeout(-1)": txn.RollbackTimeout(-time.Second),
		"Keys with empty":     txn.Keys("a", ""),
		"WithBackoff(nil)":    txn.WithBackoff(nil),
	} {
		t.Run("refused "+name, func(t *testing.T) {
			db, _, r := advRunner(t, false)
			calls := 0
			err := r.Run(ctx, failing(&calls, "k"), txn.Keys("k"), opt)
			assert.ErrorIs(t, err, txn.ErrBadOption)
			assert.Zero(t, calls)
			assert.Empty(t, db.Log(), "nothing begun")
			assert.Zero(t, r.AdmissionStats().Keys)
		})
	}
}

// TestAdversarialNilArguments: nil fn, nil contexts and nil callbacks are
// refused without running anything.
func TestAdversarialNilArguments(t *testing.T) {
	db, _, r := advRunner(t, true)
	var nilCtx context.Context // a nil context is the bad input under test
	assert.ErrorIs(t, r.Run(nilCtx, func(context.Context, *fakedb.Tx) error { return nil }), txn.ErrNilContext)
	_, err := txn.Do(nilCtx, r, func(context.Context, *fakedb.Tx) (int, error) { return 1, nil })
	assert.ErrorIs(t, err, txn.ErrNilContext)
	assert.ErrorIs(t, txn.OnCommit(nilCtx, func() {}), txn.ErrNilContext)
	assert.ErrorIs(t, txn.Savepoint(nilCtx, func(context.Context, *fakedb.Tx) error { return nil }), txn.ErrNilContext)
	_, ok := txn.TxFrom[*fakedb.Tx](nilCtx)
	assert.False(t, ok)
	var spErr, cbErr, runErr error
	require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		tx.Write("k")
		cbErr = txn.OnCommit(ctx, nil)
		spErr = txn.Savepoint[*fakedb.Tx](ctx, nil)
		runErr = r.Run(ctx, nil)
		return nil
	}))
	assert.ErrorIs(t, cbErr, txn.ErrNilFunc)
	assert.ErrorIs(t, spErr, txn.ErrNilFunc)
	assert.ErrorIs(t, runErr, txn.ErrNilFunc)
	assert.Equal(t, 1, db.Committed("k"))
	assert.Equal(t, []string{"begin 1", "commit 1"}, db.Log())
}

// treeDB is the fake backend with a classifier that looks through the whole
// error tree (Unwrap() []error included), as the real backends' do with
// errchain: txnsql, txnsqlite, txnpgx, txnmysql.
type treeDB struct{ fakedb.SavepointDB }

func (d treeDB) Classify(err error) txn.Class {
	var fe *fakedb.Error
	if errors.As(err, &fe) {
		return fe.Class
	}
	return txn.ClassPermanent
}

// TestAdversarialInnerUnknownCommitNotRerun: fn writes an audit row in a
// transaction of its own (a Run with a fresh context, as the package
// documentation suggests) and returns that Run's error. The inner commit
// happened but its reply was lost: the inner Run returns an error matching
// ErrCommitUnknown. Running the outer fn again runs the inner Run again
// and writes the audit row twice; Run must not re-run fn for an error that
// says a commit's outcome is unknown, unless the call is Idempotent.
func TestAdversarialInnerUnknownCommitNotRerun(t *testing.T) {
	db := fakedb.New()
	r := txn.New[*fakedb.Tx](treeDB{db.WithSavepoints()}, txn.WithClock(fakeclock.New(time.Now())), txn.Seed(1), txn.NoAdaptive())
	require.NoError(t, r.Err())
	db.FailCommit(errConnLost) // the first commit is the inner Run's
	calls := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		calls++
		tx.Write("order")
		return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write("audit")
			return nil
		})
	})
	assert.Equal(t, 1, calls, "fn ran again after its inner commit's outcome became unknown")
	assert.Equal(t, 1, db.Committed("audit"), "the audit row was committed twice")
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.Zero(t, db.Committed("order"))
}
