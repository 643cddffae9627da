package txn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

var (
	errConflict = fakedb.Err(txn.ClassRetryable, "conflict")
	errConnLost = fakedb.Err(txn.ClassConnLost, "connection reset")
	errCommitRe = fakedb.Err(txn.ClassCommitRetryable, "unknown commit result")
	errAmbig    = fakedb.Err(txn.ClassAmbiguous, "statement completion unknown")
	errBad      = fakedb.Err(txn.ClassPermanent, "unique violation")
)

// loggingClock is a fake clock that also writes each sleep into the fake
// database's log, so the order of rollbacks and sleeps is visible.
type loggingClock struct {
	*fakeclock.Clock
	db *fakedb.DB
}

func (c loggingClock) Sleep(ctx context.Context, d time.Duration) error {
	c.db.Record("sleep %v", d)
	return c.Clock.Sleep(ctx, d)
}

func newClock(db *fakedb.DB) loggingClock {
	return loggingClock{Clock: fakeclock.New(time.Now()), db: db}
}

// setup returns a fake database, its clock, and a Runner over them with a
// seeded random source.
func setup(t *testing.T, savepoints bool, opts ...txn.RunnerOption) (*fakedb.DB, loggingClock, *txn.Runner[*fakedb.Tx]) {
	t.Helper()
	db := fakedb.New()
	clk := newClock(db)
	opts = append([]txn.RunnerOption{txn.WithClock(clk), txn.Seed(1)}, opts...)
	var r *txn.Runner[*fakedb.Tx]
	if savepoints {
		r = txn.New[*fakedb.Tx](db.WithSavepoints(), opts...)
	} else {
		r = txn.New[*fakedb.Tx](db, opts...)
	}
	require.NoError(t, r.Err())
	return db, clk, r
}

// failing returns an fn that writes key and then returns the next of errs
// (nil once they run out), counting its calls.
func failing(calls *int, key string, errs ...error) func(context.Context, *fakedb.Tx) error {
	return func(ctx context.Context, tx *fakedb.Tx) error {
		*calls++
		tx.Write(key)
		if *calls <= len(errs) {
			return errs[*calls-1]
		}
		return nil
	}
}

// Semantic 1: every attempt begins a fresh transaction, runs fn, commits.
func TestSemantic01FreshTransactionPerAttempt(t *testing.T) {
	db, _, r := setup(t, false)
	var seen []int
	calls := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		calls++
		seen = append(seen, tx.ID)
		tx.Write("k")
		if calls < 3 {
			return errConflict
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3}, seen, "each attempt has its own transaction")
	assert.Equal(t, 1, db.Committed("k"), "only the last attempt's write is committed")
	assert.NotContains(t, strings.Join(db.Log(), ","), "commit 1")
}

// Semantic 2: rollback before anything else, on a context that survives the
// caller's cancellation and has its own timeout.
func TestSemantic02RollbackBeforeSleepOnDetachedContext(t *testing.T) {
	db, _, r := setup(t, false, txn.RollbackTimeout(3*time.Second))
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errConflict)))
	log := db.Log()
	require.GreaterOrEqual(t, len(log), 4)
	assert.Equal(t, "begin 1", log[0])
	assert.Equal(t, "rollback 1", log[1])
	assert.True(t, strings.HasPrefix(log[2], "sleep "), "the sleep comes after the rollback: %v", log)
	assert.Equal(t, "begin 2", log[3])

	// fn sees its context cancelled and fails: the rollback still gets a
	// live context, with a deadline of its own.
	ctx, cancel := context.WithCancel(context.Background())
	before := time.Now()
	err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
		cancel()
		return ctx.Err()
	})
	after := time.Now()
	require.ErrorIs(t, err, context.Canceled)
	rbs := db.RollbackCalls()
	last := rbs[len(rbs)-1]
	assert.NoError(t, last.Err, "rollback context is not cancelled by the caller")
	require.True(t, last.HasDeadline, "rollback context has its own timeout")
	// The rollback's deadline is RollbackTimeout after a moment within Run.
	assert.False(t, last.Deadline.Before(before.Add(3*time.Second)), "rollback deadline %v is less than 3s after Run started (%v)", last.Deadline, before)
	assert.False(t, last.Deadline.After(after.Add(3*time.Second)), "rollback deadline %v is more than 3s after Run returned (%v)", last.Deadline, after)
}

// Semantic 3: permanent, retryable, commit-retryable and ambiguous classes.
func TestSemantic03Classes(t *testing.T) {
	cases := []struct {
		name       string
		fnErrs     []error
		commitErrs []error
		opts       []txn.CallOption
		wantCalls  int
		wantCommit int // committed writes of "k"
		wantIs     []error
		wantSame   error // returned as it is
	}{
		{name: "permanent from fn is returned as is", fnErrs: []error{errBad}, wantCalls: 1, wantSame: errBad},
		{name: "retryable from fn re-runs fn", fnErrs: []error{errConflict, errConflict}, wantCalls: 3, wantCommit: 1},
		{name: "connection lost in fn re-runs fn", fnErrs: []error{errConnLost}, wantCalls: 2, wantCommit: 1},
		{name: "retryable from commit re-runs fn", commitErrs: []error{errConflict}, wantCalls: 2, wantCommit: 1},
		{name: "permanent from commit is returned", commitErrs: []error{errBad}, wantCalls: 1, wantSame: errBad},
		{name: "commit-retryable re-sends only the commit", commitErrs: []error{errCommitRe, errCommitRe}, wantCalls: 1, wantCommit: 1},
		{name: "connection lost during commit is ambiguous", commitErrs: []error{errConnLost}, wantCalls: 1, wantCommit: 1,
			wantIs: []error{txn.ErrCommitUnknown, errConnLost}},
		{name: "ambiguous commit is not retried", commitErrs: []error{errAmbig}, wantCalls: 1, wantCommit: 1,
			wantIs: []error{txn.ErrCommitUnknown, errAmbig}},
		{name: "ambiguous commit of an idempotent call re-runs fn", commitErrs: []error{errConnLost},
			opts: []txn.CallOption{txn.Idempotent()}, wantCalls: 2, wantCommit: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, _, r := setup(t, false)
			db.FailCommit(tc.commitErrs...)
			calls := 0
			err := r.Run(context.Background(), failing(&calls, "k", tc.fnErrs...), tc.opts...)
			assert.Equal(t, tc.wantCalls, calls, "fn executions")
			assert.Equal(t, tc.wantCommit, db.Committed("k"), "committed writes")
			switch {
			case tc.wantSame != nil:
				assert.Same(t, tc.wantSame, err)
			case tc.wantIs != nil:
				for _, target := range tc.wantIs {
					assert.ErrorIs(t, err, target)
				}
				var gu *txn.GiveUpError
				require.ErrorAs(t, err, &gu)
				assert.True(t, gu.Ambiguous)
			default:
				assert.NoError(t, err)
			}
		})
	}
}

func TestSemantic03CommitRetryableLogNeverAborts(t *testing.T) {
	db, _, r := setup(t, false)
	db.FailCommit(errCommitRe)
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k")))
	log := db.Log()
	require.Len(t, log, 4)
	assert.Equal(t, "begin 1", log[0])
	assert.Equal(t, "commit 1 failed", log[1])
	assert.True(t, strings.HasPrefix(log[2], "sleep "))
	assert.Equal(t, "commit 1", log[3], "the same transaction is committed again, never aborted")
}

func TestSemantic03CommitRetriesBoundedAndUnknown(t *testing.T) {
	db, _, r := setup(t, false, txn.MaxAttempts(3))
	db.FailCommit(errCommitRe, errCommitRe, errCommitRe, errCommitRe)
	calls := 0
	err := r.Run(context.Background(), failing(&calls, "k"))
	assert.Equal(t, 1, calls)
	assert.ErrorIs(t, err, txn.ErrCommitUnknown)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.ErrorIs(t, err, errCommitRe)
	assert.Contains(t, err.Error(), "attempt limit reached for the commit (commit outcome unknown)")
}

func TestSemantic03AmbiguousBeforeCommitIsRetried(t *testing.T) {
	db, _, r := setup(t, false)
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errAmbig)))
	assert.Equal(t, 2, calls, "a statement of unknown outcome is undone with its transaction")
	assert.Equal(t, 1, db.Committed("k"))
}

func TestSemantic02NoCommitAfterContextEnds(t *testing.T) {
	db, _, r := setup(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
		tx.Write("k")
		cancel() // the caller goes away while fn finishes its work
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 0, db.Committed("k"))
	assert.Equal(t, []string{"begin 1", "rollback 1"}, db.Log())
}

func TestSemantic03BeginFailures(t *testing.T) {
	db, _, r := setup(t, false)
	db.FailBegin(errConnLost, errConflict)
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k")))
	assert.Equal(t, 1, calls, "fn runs only once a transaction exists")
	db.FailBegin(errBad)
	assert.Same(t, errBad, r.Run(context.Background(), failing(&calls, "k")))
}

// Semantic 4: retries only at the outermost Run; nested Run joins through a
// savepoint, or outright without savepoints.
func TestNestedRunUsesSavepoint(t *testing.T) {
	db, _, r := setup(t, true)
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		tx.Write("outer")
		inner := r.Run(ctx, func(ctx context.Context, tx2 *fakedb.Tx) error {
			assert.Same(t, tx, tx2)
			tx2.Write("inner-bad")
			return errBad
		})
		assert.Same(t, errBad, inner, "a permanent error of a nested Run comes back as it is")
		return r.Run(ctx, func(ctx context.Context, tx2 *fakedb.Tx) error {
			tx2.Write("inner-good")
			return nil
		})
	})
	require.NoError(t, err)
	assert.Equal(t, 1, db.Committed("outer"))
	assert.Equal(t, 0, db.Committed("inner-bad"))
	assert.Equal(t, 1, db.Committed("inner-good"))
	assert.Equal(t, []string{"begin 1", "savepoint 1 txn_sp_1", "rollback to 1 txn_sp_1",
		"savepoint 1 txn_sp_1", "release 1 txn_sp_1", "commit 1"}, db.Log())
}

func TestNestedRetryableErrorRestartsOutermost(t *testing.T) {
	db, _, r := setup(t, true)
	outer, inner := 0, 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		outer++
		return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			inner++
			tx.Write("k")
			if inner == 1 {
				return errConflict
			}
			return nil
		})
	})
	require.NoError(t, err)
	assert.Equal(t, 2, outer, "the whole transaction was restarted")
	assert.Equal(t, 1, db.Committed("k"))
	assert.NotContains(t, db.Log(), "rollback to 1 txn_sp_1", "a retryable error does not roll back to the savepoint")
}

func TestNestedSwallowedRetryableErrorStillRestarts(t *testing.T) {
	db, _, r := setup(t, true)
	outer := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		outer++
		tx.Write("outer")
		sp := txn.Savepoint(ctx, func(ctx context.Context, _ *fakedb.Tx) error {
			if outer == 1 {
				return errConflict
			}
			return nil
		})
		_ = sp // fn ignores the error: the transaction must not commit anyway
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 2, outer)
	assert.Equal(t, 1, db.Committed("outer"))
	assert.NotContains(t, db.Log(), "commit 1")
}

func TestNestedRunWithoutSavepointsJoins(t *testing.T) {
	db, _, r := setup(t, false)
	outer := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		outer++
		require.ErrorIs(t, txn.Savepoint(ctx, func(context.Context, *fakedb.Tx) error { return nil }), txn.ErrSavepointUnsupported)
		return r.Run(ctx, func(ctx context.Context, tx2 *fakedb.Tx) error {
			assert.Same(t, tx, tx2)
			tx2.Write("k")
			if outer == 1 {
				return errConflict
			}
			return nil
		})
	})
	require.NoError(t, err)
	assert.Equal(t, 2, outer)
	assert.Equal(t, 1, db.Committed("k"))
	assert.Equal(t, []string{"begin 1", "rollback 1"}, db.Log()[:2])
}

func TestNestedRunPanicRollsBackSavepoint(t *testing.T) {
	db, _, r := setup(t, true)
	require.Panics(t, func() {
		_ = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { panic("boom") })
		})
	})
	assert.Equal(t, []string{"begin 1", "savepoint 1 txn_sp_1", "rollback to 1 txn_sp_1", "rollback 1"}, db.Log())
}

func TestNestedTxFrom(t *testing.T) {
	_, _, r := setup(t, true)
	_, ok := txn.TxFrom[*fakedb.Tx](context.Background())
	assert.False(t, ok)
	require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		got, ok := txn.TxFrom[*fakedb.Tx](ctx)
		assert.True(t, ok)
		assert.Same(t, tx, got)
		return nil
	}))
}

// Semantic 5: backoff policies.
func TestBackoffPolicies(t *testing.T) {
	rnd := newRand(42)
	ms := time.Millisecond
	for retry := 1; retry <= 12; retry++ {
		ceil := min(100*ms, 10*ms<<(retry-1))
		for i := 0; i < 200; i++ {
			d := txn.FullJitter(10*ms, 100*ms).Delay(retry, 0, rnd)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, ceil)
			e := txn.EqualJitter(10*ms, 100*ms).Delay(retry, 0, rnd)
			require.GreaterOrEqual(t, e, ceil/2)
			require.LessOrEqual(t, e, ceil)
		}
		assert.Equal(t, ceil, txn.NoJitter(10*ms, 100*ms).Delay(retry, 0, rnd))
		assert.Equal(t, 7*ms, txn.Constant(7*ms).Delay(retry, 0, rnd))
	}
	prev := time.Duration(0)
	for i := 0; i < 200; i++ {
		d := txn.DecorrelatedJitter(10*ms, 100*ms).Delay(i+1, prev, rnd)
		require.GreaterOrEqual(t, d, 10*ms)
		require.LessOrEqual(t, d, min(100*ms, 3*max(prev, 10*ms)))
		prev = d
	}
	// No overflow with huge retry numbers.
	assert.Equal(t, time.Hour, txn.NoJitter(time.Second, time.Hour).Delay(1000, 0, rnd))
}

func TestBackoffFullJitterSpreads(t *testing.T) {
	rnd := newRand(7)
	const n = 4000
	var sum time.Duration
	for i := 0; i < n; i++ {
		sum += txn.FullJitter(time.Millisecond, 100*time.Millisecond).Delay(20, 0, rnd)
	}
	mean := sum / n
	assert.InDelta(t, float64(50*time.Millisecond), float64(mean), float64(5*time.Millisecond),
		"full jitter is uniform over [0, cap]")
}

func TestBackoffSeededRunsAreReproducible(t *testing.T) {
	sleeps := func() []time.Duration {
		db, clk, r := setup(t, false)
		calls := 0
		require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict, errConflict)))
		_ = db
		return clk.Sleeps()
	}
	a, b := sleeps(), sleeps()
	require.Len(t, a, 3)
	assert.Equal(t, a, b)
	for i, d := range a {
		assert.LessOrEqual(t, d, txn.DefaultBackoffBase<<i, "default full jitter starts at the first retry")
	}
}

func TestBackoffCustomPolicy(t *testing.T) {
	var got []int
	policy := txn.BackoffFunc(func(retry int, prev time.Duration, _ *randT) time.Duration {
		got = append(got, retry)
		return time.Duration(retry) * time.Second
	})
	_, clk, r := setup(t, false, txn.WithBackoff(policy))
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict)))
	assert.Equal(t, []int{1, 2}, got)
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second}, clk.Sleeps())
}

func TestBackoffSleepPastDeadlineIsNotStarted(t *testing.T) {
	_, clk, r := setup(t, false, txn.WithBackoff(txn.Constant(time.Hour)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := 0
	err := r.Run(ctx, failing(&calls, "k", errConflict))
	assert.Equal(t, 1, calls)
	assert.Empty(t, clk.Sleeps(), "no sleep was started")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, errConflict, "the last database error is kept")
	var fe *fakedb.Error
	require.ErrorAs(t, err, &fe)
	assert.Same(t, errConflict, fe)
}

func TestBackoffSleepPastElapsedLimitIsNotStarted(t *testing.T) {
	_, clk, r := setup(t, false, txn.WithBackoff(txn.Constant(time.Second)), txn.MaxElapsed(2500*time.Millisecond), txn.MaxAttempts(0))
	calls := 0
	err := r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict, errConflict, errConflict))
	assert.Equal(t, 3, calls, "sleeps end at 1s and 2s; the third would end at 3s")
	assert.Equal(t, []time.Duration{time.Second, time.Second}, clk.Sleeps())
	assert.ErrorIs(t, err, txn.ErrElapsedExhausted)
	assert.ErrorIs(t, err, errConflict)
}

func TestBackoffSleepWakesOnCancel(t *testing.T) {
	// The system clock with an hour-long backoff: Run must return as soon as
	// the context is cancelled, not after the hour.
	db := fakedb.New()
	ctx, cancel := context.WithCancel(context.Background())
	obs := &recorder{onRetry: func() { cancel() }}
	r := txn.New[*fakedb.Tx](db, txn.WithBackoff(txn.Constant(time.Hour)), txn.WithObserver(obs))
	calls := 0
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, failing(&calls, "k", errConflict)) }()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errConflict)
	case <-time.After(time.Minute):
		require.FailNow(t, "Run kept sleeping after the context was cancelled")
	}
	assert.Equal(t, 1, calls)
}

// Semantic 6: limits on attempts and elapsed time; attempts count every
// execution of fn.
func TestSemantic06AttemptLimit(t *testing.T) {
	_, _, r := setup(t, false, txn.MaxAttempts(3))
	calls := 0
	errs := make([]error, 10)
	for i := range errs {
		errs[i] = errConflict
	}
	err := r.Run(context.Background(), failing(&calls, "k", errs...))
	assert.Equal(t, 3, calls)
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	assert.Equal(t, 3, gu.Attempts)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.Contains(t, err.Error(), "3 attempts")
}

func TestSemantic06DefaultLimits(t *testing.T) {
	_, clk, r := setup(t, false)
	calls := 0
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = errConflict
	}
	err := r.Run(context.Background(), failing(&calls, "k", errs...))
	assert.Equal(t, txn.DefaultMaxAttempts, calls)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	for _, d := range clk.Sleeps() {
		assert.LessOrEqual(t, d, txn.DefaultBackoffCap)
	}
	// Per call, the limit can be lifted.
	calls = 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errs[:20]...), txn.MaxAttempts(0)))
	assert.Equal(t, 21, calls)
}

// Semantic 7: the give-up error wraps the last error and says why.
func TestSemantic07GiveUpErrorWrapsLastError(t *testing.T) {
	_, _, r := setup(t, false, txn.MaxAttempts(2))
	first := fakedb.Err(txn.ClassRetryable, "first")
	second := fakedb.Err(txn.ClassRetryable, "second")
	calls := 0
	err := r.Run(context.Background(), failing(&calls, "k", first, second))
	var fe *fakedb.Error
	require.ErrorAs(t, err, &fe)
	assert.Same(t, second, fe, "the last error, not the first")
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.NotErrorIs(t, err, txn.ErrCommitUnknown)
	assert.Equal(t, "txn: gave up after 2 attempts in 0s: attempt limit reached: second",
		strings.Replace(err.Error(), err.(*txn.GiveUpError).Elapsed.Round(time.Microsecond).String(), "0s", 1))
}

// TestGiveUpErrorSaysThingsOnce: a reason the last error already states is
// not repeated, nor is the "txn:" prefix.
func TestGiveUpErrorSaysThingsOnce(t *testing.T) {
	for name, tc := range map[string]struct {
		err  *txn.GiveUpError
		want string
	}{
		"deadline in the driver's error": {
			&txn.GiveUpError{Reason: context.DeadlineExceeded, Attempts: 2, Last: fmt.Errorf("timeout: %w", context.DeadlineExceeded)},
			"txn: gave up after 2 attempts in 0s: timeout: context deadline exceeded",
		},
		"deadline and another error": {
			&txn.GiveUpError{Reason: context.DeadlineExceeded, Attempts: 1, Last: errConflict},
			"txn: gave up after 1 attempt in 0s: context deadline exceeded: " + errConflict.Error(),
		},
		"last error of the library": {
			&txn.GiveUpError{Reason: txn.ErrBudgetExhausted, Attempts: 3, Last: fmt.Errorf("txn: context done before commit, transaction rolled back: %w", context.Canceled)},
			"txn: gave up after 3 attempts in 0s: retry budget exhausted: context done before commit, transaction rolled back: context canceled",
		},
		"unknown outcome": {
			&txn.GiveUpError{Reason: txn.ErrCommitUnknown, Ambiguous: true, Attempts: 1, Last: errBad},
			"txn: gave up after 1 attempt in 0s: commit outcome unknown: " + errBad.Error(),
		},
	} {
		t.Run(name, func(t *testing.T) {
			assert.EqualError(t, tc.err, tc.want)
			assert.Equal(t, 1, strings.Count(tc.err.Error(), "txn:"))
		})
	}
}

// Semantic 8: a panic rolls back and is re-panicked, never retried.
func TestPanicRollsBackAndRepanics(t *testing.T) {
	db, _, r := setup(t, false)
	calls := 0
	var committed bool
	func() {
		defer func() {
			p := recover()
			assert.Equal(t, "boom", p, "the panic value is preserved")
		}()
		_ = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			tx.Write("k")
			require.NoError(t, txn.OnCommit(ctx, func() { committed = true }))
			panic("boom")
		})
	}()
	assert.Equal(t, 1, calls)
	assert.Equal(t, []string{"begin 1", "rollback 1"}, db.Log())
	assert.False(t, committed)
	assert.Equal(t, 0, db.Committed("k"))
}

func TestPanicWithRetryableValueIsNotRetried(t *testing.T) {
	_, _, r := setup(t, false)
	calls := 0
	assert.PanicsWithValue(t, errConflict, func() {
		_ = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			panic(errConflict)
		})
	})
	assert.Equal(t, 1, calls)
}

// Semantic 9: OnCommit callbacks run once after the outermost commit, and
// never for attempts or savepoints that did not commit.
func TestOnCommitRunsOnceAfterCommit(t *testing.T) {
	db, _, r := setup(t, true)
	var order []string
	calls := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		calls++
		n := calls
		require.NoError(t, txn.OnCommit(ctx, func() {
			db.Record("callback %d", n)
			order = append(order, fmt.Sprintf("attempt %d", n))
		}))
		_ = txn.Savepoint(ctx, func(ctx context.Context, _ *fakedb.Tx) error {
			require.NoError(t, txn.OnCommit(ctx, func() { order = append(order, "rolled-back savepoint") }))
			return errBad
		})
		require.NoError(t, txn.Savepoint(ctx, func(ctx context.Context, _ *fakedb.Tx) error {
			return txn.OnCommit(ctx, func() { order = append(order, fmt.Sprintf("released savepoint %d", n)) })
		}))
		if n == 1 {
			return errConflict
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"attempt 2", "released savepoint 2"}, order)
	log := db.Log()
	assert.Equal(t, "callback 2", log[len(log)-1], "callbacks run after the commit")
	assert.Equal(t, "commit 2", log[len(log)-2])
}

func TestOnCommitNotRunWhenCommitFails(t *testing.T) {
	db, _, r := setup(t, false)
	db.FailCommit(errBad)
	ran := false
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		return txn.OnCommit(ctx, func() { ran = true })
	})
	assert.Same(t, errBad, err)
	assert.False(t, ran)
}

func TestOnCommitOutsideTransaction(t *testing.T) {
	assert.ErrorIs(t, txn.OnCommit(context.Background(), func() {}), txn.ErrNoTransaction)
	assert.ErrorIs(t, txn.Savepoint(context.Background(), func(context.Context, *fakedb.Tx) error { return nil }), txn.ErrNoTransaction)
	_, _, r := setup(t, false)
	var leaked context.Context
	require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		leaked = ctx
		assert.ErrorIs(t, txn.OnCommit(ctx, nil), txn.ErrNilFunc)
		return nil
	}))
	assert.ErrorIs(t, txn.OnCommit(leaked, func() {}), txn.ErrNoTransaction, "the transaction has ended")
}

// Semantic 10: fn asks for a retry or forbids one.
func TestSemantic10RetryAndPermanentMarkers(t *testing.T) {
	_, _, r := setup(t, false)
	stale := errors.New("version changed")
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", txn.Retry(stale))))
	assert.Equal(t, 2, calls, "txn.Retry re-runs fn")

	calls = 0
	err := r.Run(context.Background(), failing(&calls, "k", txn.Permanent(errConflict)))
	assert.Equal(t, 1, calls, "txn.Permanent forbids the retry")
	assert.ErrorIs(t, err, errConflict)

	assert.Nil(t, txn.Retry(nil))
	assert.Nil(t, txn.Permanent(nil))
	calls = 0
	err = r.Run(context.Background(), failing(&calls, "k", fmt.Errorf("wrapped: %w", txn.Retry(stale))))
	require.NoError(t, err)
	assert.Equal(t, 2, calls, "a wrapped marker counts")
}

// Semantic 11: observers and the slog implementation.
type recorder struct {
	txn.NopObserver
	mu      sync.Mutex
	events  []string
	onRetry func()
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) AttemptStarted(_ context.Context, e txn.AttemptEvent) {
	r.add(fmt.Sprintf("attempt %d", e.Attempt))
}

func (r *recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.add(fmt.Sprintf("retry %d %s %v", e.Attempt, e.Class, e.Err))
	if r.onRetry != nil {
		r.onRetry()
	}
}

func (r *recorder) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	r.add(fmt.Sprintf("gave up %d %s", e.Attempts, e.Class))
}

func (r *recorder) Committed(_ context.Context, e txn.CommitEvent) {
	r.add(fmt.Sprintf("committed %d", e.Attempts))
}

func TestSemantic11Observer(t *testing.T) {
	rec := &recorder{}
	_, _, r := setup(t, false, txn.WithObserver(txn.Observers(nil, rec)))
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errConflict)))
	calls = 0
	require.Error(t, r.Run(context.Background(), failing(&calls, "k", errBad)))
	assert.Equal(t, []string{
		"attempt 1", "retry 1 retryable conflict", "attempt 2", "committed 2",
		"attempt 1", "gave up 1 permanent",
	}, rec.events)
}

func TestSemantic11SlogObserver(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	second := &recorder{}
	_, _, r := setup(t, false, txn.WithObserver(txn.Observers(txn.SlogObserver(logger), second)), txn.MaxAttempts(2))
	calls := 0
	_ = r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict))
	out := buf.String()
	assert.Contains(t, out, `level=INFO msg="txn retry" attempt=1 class=retryable`)
	assert.Contains(t, out, `level=WARN msg="txn gave up" attempts=2`)
	assert.Contains(t, out, "attempt limit reached")
	assert.Len(t, second.events, 4, "every observer gets every event")
}

// Semantic 12: bad input gets a clear error, never a panic or a hang.
func TestSemantic12BadInput(t *testing.T) {
	ctx := context.Background()
	noop := func(context.Context, *fakedb.Tx) error { return nil }

	t.Run("nil fn", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		assert.ErrorIs(t, r.Run(ctx, nil), txn.ErrNilFunc)
		_, err := txn.Do[*fakedb.Tx, int](ctx, r, nil)
		assert.ErrorIs(t, err, txn.ErrNilFunc)
	})
	t.Run("nil runner", func(t *testing.T) {
		var nilRunner *txn.Runner[*fakedb.Tx]
		assert.ErrorIs(t, nilRunner.Run(ctx, noop), txn.ErrNilRunner)
		assert.ErrorIs(t, nilRunner.Err(), txn.ErrNilRunner)
		assert.Nil(t, nilRunner.WithBegin())
		var zero txn.Runner[*fakedb.Tx]
		assert.ErrorIs(t, zero.Run(ctx, noop), txn.ErrNilRunner)
	})
	t.Run("nil backend", func(t *testing.T) {
		assert.ErrorIs(t, txn.New[*fakedb.Tx](nil).Run(ctx, noop), txn.ErrNilRunner)
	})
	t.Run("nil context", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		//nolint:staticcheck // a nil context is the bad input under test
		assert.ErrorIs(t, r.Run(nil, noop), txn.ErrNilContext) //lint:ignore SA1012 testing nil
	})
	for name, opt := range map[string]txn.RunnerOption{
		"negative attempts":    txn.MaxAttempts(-1),
		"negative elapsed":     txn.MaxElapsed(-time.Second),
		"nil backoff":          txn.WithBackoff(nil),
		"cap below base":       txn.WithBackoff(txn.FullJitter(time.Second, time.Millisecond)),
		"negative base":        txn.WithBackoff(txn.Constant(-time.Second)),
		"zero rollback":        txn.RollbackTimeout(0),
		"nil clock":            txn.WithClock(nil),
		"nil classifier":       txn.WithClassifier(nil),
		"negative budget":      txn.RetryBudget(-1, 0),
		"infinite budget rate": txn.RetryBudget(0.1, posInf()),
	} {
		t.Run("runner option "+name, func(t *testing.T) {
			bad := txn.New[*fakedb.Tx](fakedb.New(), opt)
			assert.ErrorIs(t, bad.Err(), txn.ErrBadOption)
			assert.ErrorIs(t, bad.Run(ctx, noop), txn.ErrBadOption)
		})
	}
	t.Run("call option negative attempts", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		assert.ErrorIs(t, r.Run(ctx, noop, txn.MaxAttempts(-2)), txn.ErrBadOption)
	})
	t.Run("context already done", func(t *testing.T) {
		db := fakedb.New()
		r := txn.New[*fakedb.Tx](db)
		done, cancel := context.WithCancel(ctx)
		cancel()
		calls := 0
		err := r.Run(done, failing(&calls, "k"))
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 0, calls, "a context already done runs nothing")
		assert.Empty(t, db.Log())
	})
	t.Run("fn ends the transaction itself", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		calls := 0
		err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			tx.Finish()
			return nil
		})
		assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
		assert.ErrorIs(t, err, txn.ErrTxDone)
		assert.Equal(t, 1, calls)
		assert.Equal(t, 1, strings.Count(err.Error(), "txn:"), "the message says txn once: %q", err)
	})
	t.Run("nested Run on another Runner", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		other := txn.New[*fakedb.Tx](fakedb.New())
		err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			return other.Run(ctx, noop)
		})
		assert.ErrorIs(t, err, txn.ErrForeignRunner)
		assert.ErrorContains(t, err, "call it on the outer Runner")
	})
	t.Run("nested Run on a Runner of another handle type", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		otherType := txn.New[int](intBackend{})
		err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			return otherType.Run(ctx, func(context.Context, int) error { return nil })
		})
		assert.ErrorIs(t, err, txn.ErrForeignRunner)
	})
	t.Run("nested Run through a WithBegin view joins", func(t *testing.T) {
		db := fakedb.New()
		r := txn.New[*fakedb.Tx](db.WithSavepoints())
		view := r.WithBegin()
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			return view.Run(ctx, noop)
		}))
		assert.Equal(t, 1, strings.Count(strings.Join(db.Log(), "\n"), "begin "), "one transaction: %v", db.Log())
	})
	t.Run("nested Run with an invalid option", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New())
		err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			return r.Run(ctx, noop, txn.MaxAttempts(-1))
		})
		assert.ErrorIs(t, err, txn.ErrBadOption, "a nested Run honours no option but refuses an invalid one")
	})
	t.Run("Savepoint of another handle type", func(t *testing.T) {
		r := txn.New[*fakedb.Tx](fakedb.New().WithSavepoints())
		var spErr error
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			spErr = txn.Savepoint(ctx, func(context.Context, int) error { return nil })
			return nil
		}))
		assert.ErrorIs(t, spErr, txn.ErrNoTransaction)
		assert.ErrorContains(t, spErr, "ctx carries a *fakedb.Tx transaction; make fn take a *fakedb.Tx")
	})
}

func TestDoReturnsValueOfCommittedAttempt(t *testing.T) {
	_, _, r := setup(t, false)
	calls := 0
	v, err := txn.Do(context.Background(), r, func(ctx context.Context, tx *fakedb.Tx) (int, error) {
		calls++
		if calls == 1 {
			return 1, errConflict
		}
		return calls * 10, nil
	})
	require.NoError(t, err)
	assert.Equal(t, 20, v)
	v, err = txn.Do(context.Background(), r, func(ctx context.Context, tx *fakedb.Tx) (int, error) {
		return 5, errBad
	})
	assert.Same(t, errBad, err)
	assert.Zero(t, v)
}

func TestBudgetBoundsRetries(t *testing.T) {
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.Seed(3), txn.RetryBudget(0.1, 0), txn.MaxAttempts(0),
		txn.WithBackoff(txn.Constant(0)))
	// The database is down: every attempt fails.
	attempts := 0
	var gaveUp int
	for i := 0; i < 100; i++ {
		err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			attempts++
			return errConflict
		})
		require.Error(t, err)
		if errors.Is(err, txn.ErrBudgetExhausted) {
			gaveUp++
			assert.ErrorIs(t, err, errConflict)
		}
	}
	retries := attempts - 100
	assert.LessOrEqual(t, retries, 10, "retries stay within 10%% of Runs")
	assert.GreaterOrEqual(t, retries, 9, "the budget does allow the retries it earned")
	assert.Equal(t, 100, gaveUp)
}

func TestBudgetReserveRefillsOverTime(t *testing.T) {
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.RetryBudget(0, 2), txn.MaxAttempts(0),
		txn.WithBackoff(txn.Constant(0)))
	count := func() int {
		attempts := 0
		err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			attempts++
			return errConflict
		})
		require.ErrorIs(t, err, txn.ErrBudgetExhausted)
		return attempts - 1
	}
	assert.Equal(t, 2, count(), "the initial reserve")
	assert.Equal(t, 0, count(), "spent")
	clk.Advance(time.Second)
	assert.Equal(t, 2, count(), "refilled after a second, capped at the rate")
	clk.Advance(500 * time.Millisecond)
	assert.Equal(t, 1, count())
}

func TestBudgetDoesNotLimitHealthyRunner(t *testing.T) {
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.RetryBudget(0.2, 0))
	// Each Run fails once in ten attempts: the budget covers it.
	for i := 0; i < 200; i++ {
		calls := 0
		fail := i%10 == 9
		require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			if fail && calls == 1 {
				return errConflict
			}
			return nil
		}))
	}
}

func TestRunnerConcurrentUse(t *testing.T) {
	db := fakedb.New()
	r := txn.New[*fakedb.Tx](db, txn.WithBackoff(txn.Constant(0)), txn.RetryBudget(1, 100))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				calls := 0
				assert.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					calls++
					tx.Write("k")
					_ = txn.OnCommit(ctx, func() {})
					if calls == 1 && i%3 == 0 {
						return errConflict
					}
					return nil
				}))
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 400, db.Committed("k"))
}

// connDB is a fake backend that also recognises a lost connection.
type connDB struct{ *fakedb.DB }

var errGone = errors.New("connection gone")

func (connDB) ClassifyConn(err error) txn.Class {
	if errors.Is(err, errGone) {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}

// TestWithClassifier: the Runner's classifier replaces the backend's
// table, Retry and Permanent marks still win, and what it leaves permanent
// is checked by the backend's ConnClassifier.
func TestWithClassifier(t *testing.T) {
	errMine := errors.New("version check failed")
	mine := func(err error) txn.Class {
		if errors.Is(err, errMine) {
			return txn.ClassRetryable
		}
		return txn.ClassPermanent
	}
	ctx := context.Background()
	newRunner := func() (*fakedb.DB, *txn.Runner[*fakedb.Tx]) {
		db := fakedb.New()
		return db, txn.New[*fakedb.Tx](connDB{db}, txn.WithClassifier(mine), txn.WithClock(fakeclock.New(time.Now())), txn.Seed(1))
	}
	t.Run("replaces the table", func(t *testing.T) {
		_, r := newRunner()
		calls := 0
		err := r.Run(ctx, failing(&calls, "k", errConflict))
		assert.Same(t, errConflict, err, "the backend's retryable error is permanent for this classifier")
		assert.Equal(t, 1, calls)
	})
	t.Run("its own retryable errors", func(t *testing.T) {
		db, r := newRunner()
		calls := 0
		require.NoError(t, r.Run(ctx, failing(&calls, "k", errMine)))
		assert.Equal(t, 2, calls)
		assert.Equal(t, 1, db.Committed("k"))
	})
	t.Run("marks win", func(t *testing.T) {
		_, r := newRunner()
		calls := 0
		err := r.Run(ctx, failing(&calls, "k", txn.Permanent(errMine)))
		assert.ErrorIs(t, err, errMine)
		assert.Equal(t, 1, calls)
	})
	t.Run("a lost connection at commit stays unknown", func(t *testing.T) {
		db, r := newRunner()
		db.FailCommit(errGone)
		calls := 0
		err := r.Run(ctx, failing(&calls, "k"))
		assert.ErrorIs(t, err, txn.ErrCommitUnknown)
		assert.ErrorIs(t, err, errGone)
		assert.Equal(t, 1, calls)
	})
}
