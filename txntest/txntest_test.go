package txntest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txntest"
)

// fakeTB captures what a check reports instead of failing the real test.
// Helper and Context pass through to the real test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	msgs     []string
	cleanups []func()
}

func newFakeTB(t *testing.T) *fakeTB { return &fakeTB{TB: t} }

func (f *fakeTB) record(failed bool, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = f.failed || failed
	f.msgs = append(f.msgs, s)
}

func (f *fakeTB) Error(args ...any)                 { f.record(true, fmt.Sprint(args...)) }
func (f *fakeTB) Errorf(format string, args ...any) { f.record(true, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Fatal(args ...any)                 { f.record(true, fmt.Sprint(args...)) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.record(true, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Fail()                             { f.record(true, "Fail") }
func (f *fakeTB) FailNow()                          { f.record(true, "FailNow") }
func (f *fakeTB) Logf(format string, args ...any)   { f.record(false, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Cleanup(fn func())                 { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) text() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

// runCleanups runs the registered cleanups, last first, as testing does.
func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// newRunner returns a Runner over a fresh memDB with no backoff sleeps.
func newRunner(t *testing.T, opts ...txn.RunnerOption) (*memDB, *txn.Runner[*Tx]) {
	t.Helper()
	db := newMemDB()
	r := txn.New[*Tx](db, append([]txn.RunnerOption{txn.WithBackoff(txn.Constant(0))}, opts...)...)
	require.NoError(t, r.Err())
	return db, r
}

// The three bugs of the examples, each beside its fix, through the
// testing.TB entry points: the buggy version must fail the check, naming
// the faulted attempt and both reports, and the fix must pass.
func TestCheckCatchesTheThreeBugs(t *testing.T) {
	t.Run("side effect in fn, fixed with OnCommit", func(t *testing.T) {
		db, r := newRunner(t)
		var sent []string
		report := func(context.Context) []string { return append([]string(nil), sent...) }
		reset := txntest.Reset(func(context.Context) error { sent = nil; db.Put("stock", 5); return nil })
		buggy := func(ctx context.Context, tx *Tx) error {
			tx.Put("stock", tx.Get("stock")-1)
			sent = append(sent, "order shipped")
			return nil
		}
		fixed := func(ctx context.Context, tx *Tx) error {
			tx.Put("stock", tx.Get("stock")-1)
			return txn.OnCommit(ctx, func() { sent = append(sent, "order shipped") })
		}

		ft := newFakeTB(t)
		txntest.CheckRerun(ft, r, buggy, report, reset)
		require.True(t, ft.Failed(), "the buggy version must fail the check")
		assert.Contains(t, ft.text(), "after attempt 1 failed before COMMIT and attempt 2 committed")
		assert.Contains(t, ft.text(), "report returned [order shipped order shipped]; after a single attempt it returned [order shipped]")

		ft = newFakeTB(t)
		txntest.CheckRerun(ft, r, fixed, report, reset)
		assert.False(t, ft.Failed(), ft.text())
		assert.Equal(t, 4, db.Get("stock"), "the last run of the check committed once")
	})

	t.Run("captured slice, fixed by starting each attempt afresh", func(t *testing.T) {
		db, r := newRunner(t)
		var total []int
		report := func(context.Context) []int { return append([]int(nil), total...) }
		reset := txntest.Reset(func(context.Context) error {
			db.Clear()
			db.Put("line:1", 3)
			db.Put("line:2", 4)
			total = nil
			return nil
		})
		buggy := func(ctx context.Context, tx *Tx) error {
			for _, k := range tx.Keys("line:") {
				total = append(total, tx.Get(k))
			}
			return nil
		}
		fixed := func(ctx context.Context, tx *Tx) error {
			var lines []int
			for _, k := range tx.Keys("line:") {
				lines = append(lines, tx.Get(k))
			}
			total = lines
			return nil
		}

		ft := newFakeTB(t)
		txntest.CheckRerun(ft, r, buggy, report, reset, txntest.At(txn.InterceptCommit))
		require.True(t, ft.Failed())
		assert.Contains(t, ft.text(), "after attempt 1 failed at COMMIT and attempt 2 committed, report returned [3 4 3 4]")

		ft = newFakeTB(t)
		txntest.CheckRerun(ft, r, fixed, report, reset, txntest.At(txn.InterceptBegin, txn.InterceptBeforeCommit, txn.InterceptCommit))
		assert.False(t, ft.Failed(), ft.text())
	})

	t.Run("value computed once outside the retry, fixed by reading inside fn", func(t *testing.T) {
		db, r := newRunner(t)
		report := func(context.Context) int { return db.Get("seats") }
		reset := txntest.Reset(func(context.Context) error { db.Put("seats", 10); return nil })
		meanwhile := txntest.Meanwhile(func(context.Context) error {
			db.Put("seats", db.Get("seats")-3) // another booking commits
			return nil
		})
		bookBuggy := func(ctx context.Context, r *txn.Runner[*Tx]) error {
			free := db.Get("seats")
			return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
				tx.Put("seats", free-2)
				return nil
			})
		}
		// A value computed in the first attempt and kept for the next is
		// the same bug.
		latched := 0
		bookLatched := func(ctx context.Context, r *txn.Runner[*Tx]) error {
			latched = 0
			return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
				if latched == 0 {
					latched = tx.Get("seats")
				}
				tx.Put("seats", latched-2)
				return nil
			})
		}
		book := func(ctx context.Context, r *txn.Runner[*Tx]) error {
			return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
				tx.Put("seats", tx.Get("seats")-2)
				return nil
			})
		}

		for name, call := range map[string]func(context.Context, *txn.Runner[*Tx]) error{"outside": bookBuggy, "latched": bookLatched} {
			t.Run(name, func(t *testing.T) {
				ft := newFakeTB(t)
				txntest.CheckCall(ft, r, call, report, reset, meanwhile)
				require.True(t, ft.Failed(), name)
				assert.Contains(t, ft.text(), "after attempt 1 failed before COMMIT, another transaction (Meanwhile) committed, and attempt 2 committed, report returned 8; after a single attempt it returned 5", name)
			})
		}

		ft := newFakeTB(t)
		txntest.CheckCall(ft, r, book, report, reset, meanwhile, txntest.Retries(3))
		assert.False(t, ft.Failed(), ft.text())
	})
}

func TestCheckNamesTheFirstAttemptThatDiffers(t *testing.T) {
	// fn is wrong only from its third execution on: one forced retry
	// passes, two do not.
	db, r := newRunner(t)
	calls := 0
	fn := func(ctx context.Context, tx *Tx) error {
		calls++
		v := 1
		if calls >= 3 {
			v = 2
		}
		tx.Put("k", v)
		return nil
	}
	report := func(context.Context) int { return db.Get("k") }
	reset := txntest.Reset(func(context.Context) error { calls = 0; return nil })
	err := txntest.Rerun(t.Context(), r, fn, report, reset, txntest.Retries(3))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "after attempts 1 and 2 each failed before COMMIT and attempt 3 committed, report returned 2; after a single attempt it returned 1")
}

func TestCheckReportsWhatStoppedIt(t *testing.T) {
	ctx := t.Context()
	noop := func(context.Context, *Tx) error { return nil }
	report := func(context.Context) int { return 0 }

	_, r := newRunner(t)
	err := txntest.RerunCall(ctx, r, func(ctx context.Context, _ *txn.Runner[*Tx]) error {
		return r.Run(ctx, noop) // bypasses the Runner it was given
	}, report)
	assert.ErrorContains(t, err, "ran no transaction through the Runner it was given")

	errBoom := errors.New("boom")
	err = txntest.Rerun(ctx, r, func(context.Context, *Tx) error { return errBoom }, report)
	assert.ErrorIs(t, err, errBoom)
	assert.ErrorContains(t, err, "failed without any fault")

	_, limited := newRunner(t, txn.MaxAttempts(2))
	err = txntest.Rerun(ctx, limited, noop, report)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.ErrorContains(t, err, "once attempts 1 and 2 each failed before COMMIT")

	err = txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
		_ = r.Run(ctx, noop, txn.MaxAttempts(1)) // swallows Run's error
		return nil
	}, report)
	assert.ErrorContains(t, err, "does the call ignore an error of Run")

	err = txntest.Rerun(ctx, r, noop, report, txntest.At(txn.InterceptAfterCommit))
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.ErrorContains(t, err, "only for a call made with txn.Idempotent()")

	err = txntest.Rerun(ctx, r, noop, report, txntest.Reset(func(context.Context) error { return errBoom }))
	assert.ErrorIs(t, err, errBoom)
	err = txntest.Rerun(ctx, r, noop, report, txntest.Meanwhile(func(context.Context) error { return errBoom }))
	assert.ErrorIs(t, err, errBoom)

	assert.ErrorContains(t, txntest.Rerun(ctx, r, noop, report, txntest.Retries(0)), "Retries(0)")
	assert.ErrorContains(t, txntest.Rerun(ctx, r, noop, report, txntest.At()), "no point")
	assert.ErrorIs(t, txntest.Rerun(ctx, r, nil, report), txn.ErrNilFunc)
	assert.ErrorIs(t, txntest.Rerun[*Tx, int](ctx, r, noop, nil), txn.ErrNilFunc)
	assert.ErrorIs(t, txntest.Rerun(ctx, nil, noop, report), txn.ErrNilRunner)
}

func TestCheckIdempotentCallAfterCommit(t *testing.T) {
	db, r := newRunner(t)
	report := func(context.Context) int { return db.Get("k") }
	reset := txntest.Reset(func(context.Context) error { db.Put("k", 0); return nil })
	set := func(ctx context.Context, r *txn.Runner[*Tx]) error {
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error { tx.Put("k", 5); return nil }, txn.Idempotent())
	}
	add := func(ctx context.Context, r *txn.Runner[*Tx]) error {
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error { tx.Put("k", tx.Get("k")+5); return nil }, txn.Idempotent())
	}
	require.NoError(t, txntest.RerunCall(t.Context(), r, set, report, reset, txntest.At(txn.InterceptAfterCommit)))
	err := txntest.RerunCall(t.Context(), r, add, report, reset, txntest.At(txn.InterceptAfterCommit))
	require.Error(t, err, "declared Idempotent, but adding twice is not adding once")
	assert.Contains(t, err.Error(), "after attempt 1 committed but its COMMIT reply was lost and attempt 2 committed, report returned 10; after a single attempt it returned 5")
}

func TestCheckCallWithSeveralRunsAndNesting(t *testing.T) {
	db, r := newRunner(t)
	report := func(context.Context) [2]int { return [2]int{db.Get("a"), db.Get("b")} }
	reset := txntest.Reset(func(context.Context) error { db.Put("a", 0); db.Put("b", 0); return nil })
	call := func(ctx context.Context, r *txn.Runner[*Tx]) error {
		if err := r.Run(ctx, func(ctx context.Context, tx *Tx) error {
			tx.Put("a", tx.Get("a")+1)
			// A nested Run joins the outer transaction: the fault of the
			// outermost attempt undoes it too.
			return r.Run(ctx, func(ctx context.Context, tx *Tx) error { tx.Put("b", tx.Get("b")+1); return nil })
		}); err != nil {
			return err
		}
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error { tx.Put("b", tx.Get("b")+10); return nil })
	}
	require.NoError(t, txntest.RerunCall(t.Context(), r, call, report, reset))
	assert.Equal(t, [2]int{1, 11}, report(t.Context()))

	// The same call with a bug in its second Run is named with both Runs.
	var log []string
	buggy := func(ctx context.Context, r *txn.Runner[*Tx]) error {
		log = nil
		if err := r.Run(ctx, func(ctx context.Context, tx *Tx) error { return nil }); err != nil {
			return err
		}
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error { log = append(log, "x"); return nil })
	}
	err := txntest.RerunCall(t.Context(), r, buggy, func(context.Context) int { return len(log) })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "(in each of the call's 2 Runs)")
}

func TestFaultsFixedPlan(t *testing.T) {
	db, r := newRunner(t)
	f := txntest.Fail(txn.InterceptBegin, 1, 0, -3).Fail(txn.InterceptAfterCommit, 2)
	rec := &txntest.Recorder{}
	calls := 0
	err := r.WithInterceptor(f).Run(t.Context(), func(ctx context.Context, tx *Tx) error {
		calls++
		tx.Put("n", tx.Get("n")+1)
		return nil
	}, txn.WithObserver(rec), txn.Idempotent())
	require.NoError(t, err)
	assert.Equal(t, 2, calls, "attempt 1 failed at BEGIN, before fn")
	assert.Equal(t, 2, db.Get("n"), "attempt 2 committed although Run was told otherwise; attempt 3 committed too")
	assert.Equal(t, []txntest.Injection{{At: txn.InterceptBegin, Attempt: 1}, {At: txn.InterceptAfterCommit, Attempt: 2}}, f.Injected())
	assert.Equal(t, 3, f.Attempts())
	assert.Equal(t, uint64(0), f.Seed())
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, retry ambiguous, attempt 3, committed", rec.String())
	assert.Equal(t, []txn.Class{txn.ClassRetryable, txn.ClassAmbiguous}, rec.Classes())

	var fe *txntest.FaultError
	require.ErrorAs(t, rec.Retries()[0].Err, &fe)
	assert.Equal(t, txntest.FaultError{At: txn.InterceptBegin, Attempt: 1}, *fe)
	assert.Equal(t, "txntest: fault injected at BEGIN of attempt 1", fe.Error())
}

func TestFaultsRandomIsReproducibleAndBounded(t *testing.T) {
	draw := func(seed uint64) ([]txntest.Injection, []int) {
		_, r := newRunner(t, txn.MaxAttempts(4))
		f := txntest.RandomSeed(seed, 3)
		faulty := r.WithInterceptor(f)
		var attempts []int
		for i := 0; i < 50; i++ {
			calls := 0
			require.NoError(t, faulty.Run(t.Context(), func(ctx context.Context, tx *Tx) error { calls++; return nil }),
				"at most 3 faults per Run, under MaxAttempts(4)")
			attempts = append(attempts, calls)
		}
		assert.Equal(t, seed, f.Seed())
		return f.Injected(), attempts
	}
	a, calls := draw(42)
	b, _ := draw(42)
	c, _ := draw(43)
	assert.Equal(t, a, b, "the same seed draws the same faults")
	assert.NotEqual(t, a, c)
	points := map[txn.InterceptPoint]bool{}
	for _, in := range a {
		assert.LessOrEqual(t, in.Attempt, 3)
		points[in.At] = true
	}
	assert.Len(t, points, 3, "BEGIN, before COMMIT and COMMIT all drawn over 50 Runs")
	assert.Contains(t, calls, 1, "some Runs drew no fault")
}

func TestRandomSeedFromEnvironmentAndLoggedOnFailure(t *testing.T) {
	t.Setenv(txntest.SeedEnv, "7")
	ft := newFakeTB(t)
	f := txntest.Random(ft, 2, txn.InterceptCommit)
	assert.Equal(t, uint64(7), f.Seed())
	ft.runCleanups()
	assert.Empty(t, ft.text(), "nothing is logged when the test passed")

	ft = newFakeTB(t)
	f = txntest.Random(ft, 2)
	ft.Errorf("the test failed")
	ft.runCleanups()
	assert.Contains(t, ft.text(), "seed 7; run again with TXNTEST_SEED=7")
	assert.Equal(t, uint64(7), f.Seed())

	t.Setenv(txntest.SeedEnv, "x")
	ft = newFakeTB(t)
	txntest.Random(ft, 2)
	assert.Contains(t, ft.text(), `TXNTEST_SEED="x" is not an unsigned integer`)
}

func TestRecorder(t *testing.T) {
	_, r := newRunner(t, txn.MaxAttempts(2))
	rec := &txntest.Recorder{}
	r = r.WithInterceptor(txntest.Fail(txn.InterceptBeforeCommit, 1, 2))
	err := r.Run(t.Context(), func(context.Context, *Tx) error { return nil }, txn.WithObserver(rec))
	require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.Equal(t, 2, rec.Attempts())
	assert.Equal(t, 0, rec.Commits())
	require.Len(t, rec.GiveUps(), 1)
	assert.Equal(t, 2, rec.GiveUps()[0].Attempts)
	assert.Len(t, rec.Retries(), 1)
	assert.Empty(t, rec.Admissions())
	assert.Equal(t, "attempt 1, retry retryable, attempt 2, gave up retryable", rec.String())
	rec.Reset()
	assert.Equal(t, "", rec.String())
	assert.Zero(t, rec.Attempts())
}
