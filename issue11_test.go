package txn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

// Issue 11, item 1: once an attempt has seen a retryable error in a nested
// level, the whole transaction is rolled back at once, so that nothing fn
// does afterwards can reach the database, and the attempt is retried.
func TestRetryableErrorInNestedLevelEndsAttemptAtOnce(t *testing.T) {
	for _, nest := range []string{"Savepoint", "nested Run"} {
		t.Run(nest, func(t *testing.T) {
			db, _, r := setup(t, true)
			attempt := 0
			var afterErrs []error
			var nestedAfter []error
			innerRan := 0
			err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				attempt++
				require.NoError(t, tx.Put("before"))
				body := func(ctx context.Context, tx *fakedb.Tx) error {
					if attempt == 1 {
						return errConflict
					}
					return nil
				}
				var nerr error
				if nest == "Savepoint" {
					nerr = txn.Savepoint(ctx, body)
				} else {
					nerr = r.Run(ctx, body)
				}
				if attempt == 1 {
					require.ErrorIs(t, nerr, errConflict)
				}
				db.Record("fn goes on")
				// fn swallows the error and goes on writing.
				afterErrs = append(afterErrs, tx.Put("after"))
				// A later nested level of the doomed attempt runs nothing.
				nestedAfter = append(nestedAfter, r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
					innerRan++
					return nil
				}))
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, 2, attempt)
			require.Len(t, afterErrs, 2)
			assert.ErrorIs(t, afterErrs[0], txn.ErrTxDone, "a statement after the retryable error finds the transaction ended")
			assert.NoError(t, afterErrs[1])
			assert.ErrorIs(t, nestedAfter[0], errConflict, "a nested Run of the doomed attempt returns the retryable error")
			assert.NoError(t, nestedAfter[1])
			assert.Equal(t, 1, innerRan)
			assert.Equal(t, 1, db.Committed("before"))
			assert.Equal(t, 1, db.Committed("after"))
			log := db.Log()
			require.GreaterOrEqual(t, len(log), 3)
			assert.Equal(t, []string{"begin 1", "savepoint 1 txn_sp_1", "rollback 1", "fn goes on"}, log[:4],
				"the transaction is rolled back before fn goes on")
			assert.NotContains(t, log, "commit 1")
		})
	}
}

// Issue 11, item 2: a transaction that has ended is unreachable through its
// context. A Run on that context, such as one started from an OnCommit
// callback, starts a new outermost transaction.
func TestEndedTransactionUnreachable(t *testing.T) {
	for _, savepoints := range []bool{true, false} {
		name := "without savepoints"
		if savepoints {
			name = "with savepoints"
		}
		t.Run(name, func(t *testing.T) {
			db, _, r := setup(t, savepoints)
			ctx := context.Background()
			var cbErrs struct {
				txFrom     bool
				onCommit   error
				savepoint  error
				run        error
				runInnerTx bool
			}
			err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
				tx.Write("order")
				return txn.OnCommit(ctx, func() {
					_, cbErrs.txFrom = txn.TxFrom[*fakedb.Tx](ctx)
					cbErrs.onCommit = txn.OnCommit(ctx, func() {})
					cbErrs.savepoint = txn.Savepoint(ctx, func(context.Context, *fakedb.Tx) error { return nil })
					cbErrs.run = r.Run(ctx, func(ctx context.Context, tx2 *fakedb.Tx) error {
						_, cbErrs.runInnerTx = txn.TxFrom[*fakedb.Tx](ctx)
						tx2.Write("audit")
						return nil
					})
				})
			})
			require.NoError(t, err)
			assert.False(t, cbErrs.txFrom, "TxFrom reports no transaction once it ended")
			assert.ErrorIs(t, cbErrs.onCommit, txn.ErrNoTransaction)
			assert.ErrorIs(t, cbErrs.savepoint, txn.ErrNoTransaction)
			require.NoError(t, cbErrs.run)
			assert.True(t, cbErrs.runInnerTx)
			assert.Equal(t, 1, db.Committed("order"))
			assert.Equal(t, 1, db.Committed("audit"), "the Run in the callback committed its own transaction")
			assert.Equal(t, []string{"begin 1", "commit 1", "begin 2", "commit 2"}, db.Log())
		})
	}
	t.Run("leaked to a goroutine", func(t *testing.T) {
		db, _, r := setup(t, true)
		leaked := make(chan context.Context, 1)
		require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			leaked <- ctx
			return nil
		}))
		ctx := <-leaked
		_, ok := txn.TxFrom[*fakedb.Tx](ctx)
		assert.False(t, ok)
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { tx.Write("late"); return nil }))
		assert.Equal(t, 1, db.Committed("late"))
	})
	t.Run("savepoint context after the savepoint joins the live transaction", func(t *testing.T) {
		db, _, r := setup(t, true)
		require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			var spCtx context.Context
			require.NoError(t, txn.Savepoint(ctx, func(ctx context.Context, _ *fakedb.Tx) error { spCtx = ctx; return nil }))
			got, ok := txn.TxFrom[*fakedb.Tx](spCtx)
			assert.True(t, ok)
			assert.Same(t, tx, got)
			return r.Run(spCtx, func(ctx context.Context, tx2 *fakedb.Tx) error { tx2.Write("joined"); return nil })
		}))
		assert.Equal(t, 1, db.Committed("joined"))
		assert.Equal(t, 1, countPrefix(db.Log(), "begin "), "one transaction: %v", db.Log())
	})
}

func countPrefix(log []string, prefix string) int {
	n := 0
	for _, l := range log {
		if len(l) >= len(prefix) && l[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

// Issue 11, item 3: when fn has committed or rolled back the transaction
// itself, Run ends with ErrFnFinishedTx whatever fn returns, and never runs
// fn again, also when the context ends at the same moment.
func TestFnFinishedTxNeverRerun(t *testing.T) {
	for name, ret := range map[string]error{
		"nil":                 nil,
		"Retry":               txn.Retry(errors.New("version check failed")),
		"retryable db error":  errConflict,
		"permanent db error":  errBad,
		"connection lost":     errConnLost,
		"ambiguous statement": errAmbig,
	} {
		for _, cancelToo := range []bool{false, true} {
			t.Run(name+map[bool]string{true: " context ends too"}[cancelToo], func(t *testing.T) {
				db, _, r := setup(t, true)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				calls, cbs := 0, 0
				err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
					calls++
					require.NoError(t, txn.OnCommit(ctx, func() { cbs++ }))
					tx.Write("k")
					tx.Finish()
					if cancelToo {
						cancel()
					}
					return ret
				})
				require.Error(t, err)
				assert.ErrorIs(t, err, txn.ErrFnFinishedTx)
				if ret != nil {
					assert.ErrorIs(t, err, ret, "fn's error is kept")
				}
				assert.Equal(t, 1, calls, "fn is never run again")
				assert.Zero(t, cbs)
				assert.Equal(t, 1, countPrefix(db.Log(), "begin "))
			})
		}
	}
}

// Issue 11, item 4: the returned error says the outcome is unknown whenever
// the last commit's outcome is, also for Idempotent calls that then ran out
// of attempts, of time, or failed otherwise.
func TestUnknownCommitOutcomeIsNeverForgotten(t *testing.T) {
	check := func(t *testing.T, err error, also error) {
		t.Helper()
		require.Error(t, err)
		assert.ErrorIs(t, err, txn.ErrCommitUnknown)
		if also != nil {
			assert.ErrorIs(t, err, also)
		}
		var gu *txn.GiveUpError
		require.ErrorAs(t, err, &gu)
		assert.True(t, gu.Ambiguous)
	}
	t.Run("attempts exhausted", func(t *testing.T) {
		db, _, r := setup(t, false)
		db.FailCommit(errConnLost, errConnLost)
		calls := 0
		err := r.Run(context.Background(), failing(&calls, "k"), txn.Idempotent(), txn.MaxAttempts(2))
		check(t, err, txn.ErrAttemptsExhausted)
		assert.Equal(t, 2, calls)
		assert.Equal(t, 2, db.Committed("k"), "both commits happened, their replies were lost")
	})
	t.Run("deadline before the retry", func(t *testing.T) {
		db, clk, r := setup(t, false, txn.WithBackoff(txn.Constant(time.Hour)))
		db.FailCommit(errConnLost)
		ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Minute))
		defer cancel()
		calls := 0
		err := r.Run(ctx, failing(&calls, "k"), txn.Idempotent())
		check(t, err, context.DeadlineExceeded)
		assert.Equal(t, 1, calls)
	})
	t.Run("elapsed limit before the retry", func(t *testing.T) {
		db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(time.Hour)))
		db.FailCommit(errConnLost)
		calls := 0
		err := r.Run(context.Background(), failing(&calls, "k"), txn.Idempotent(), txn.MaxElapsed(time.Minute))
		check(t, err, txn.ErrElapsedExhausted)
	})
	t.Run("conflict after the unknown commit", func(t *testing.T) {
		db, _, r := setup(t, false)
		db.FailCommit(errConnLost)
		calls := 0
		err := r.Run(context.Background(), failing(&calls, "k", nil, errConflict), txn.Idempotent(), txn.MaxAttempts(2))
		check(t, err, errConflict)
	})
	t.Run("permanent error after the unknown commit", func(t *testing.T) {
		db, _, r := setup(t, false)
		db.FailCommit(errConnLost)
		calls := 0
		err := r.Run(context.Background(), failing(&calls, "k", nil, errBad), txn.Idempotent())
		check(t, err, errBad)
		assert.Equal(t, 2, calls)
	})
	t.Run("a later commit settles it", func(t *testing.T) {
		db, _, r := setup(t, false)
		db.FailCommit(errConnLost)
		calls := 0
		require.NoError(t, r.Run(context.Background(), failing(&calls, "k"), txn.Idempotent()))
		assert.Equal(t, 2, calls)
	})
	t.Run("known failure stays known", func(t *testing.T) {
		db, _, r := setup(t, false)
		calls := 0
		err := r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict), txn.Idempotent(), txn.MaxAttempts(2))
		require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
		assert.NotErrorIs(t, err, txn.ErrCommitUnknown)
		_ = db
	})
}

// Issue 11, item 8: a nested Run accepts every CallOption, so that a
// function that always passes its options composes into a bigger Run; the
// options that govern retries are the outermost Run's.
func TestNestedRunAcceptsCallOptions(t *testing.T) {
	db, _, r := setup(t, true)
	rec := &recorder{}
	opts := []txn.CallOption{
		txn.Keys("account:1"), txn.MaxAttempts(1), txn.MaxElapsed(time.Nanosecond), txn.Idempotent(),
		txn.WithBackoff(txn.Constant(time.Hour)), txn.RollbackTimeout(time.Second), txn.WithObserver(rec),
	}
	repo := func(ctx context.Context, key string, fail bool) error {
		return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
			tx.Write(key)
			if fail {
				return errConflict
			}
			return nil
		}, opts...)
	}
	// Alone, it is an outermost Run with its options.
	require.NoError(t, repo(context.Background(), "alone", false))
	// Nested, it joins; the outer Run's limits govern the retry its
	// conflict causes, not its own MaxAttempts(1).
	outer := 0
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		outer++
		return repo(ctx, "nested", outer == 1)
	}, txn.MaxAttempts(3))
	require.NoError(t, err)
	assert.Equal(t, 2, outer)
	assert.Equal(t, 1, db.Committed("nested"))
	assert.Zero(t, txn.KeyWaiters(r, "account:1"))
	rec.mu.Lock()
	assert.Equal(t, []string{"attempt 1", "committed 1"}, rec.events, "the nested Run's observer saw only its own outermost Run")
	rec.mu.Unlock()

	t.Run("invalid option still refused", func(t *testing.T) {
		err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			return r.Run(ctx, func(context.Context, *fakedb.Tx) error { return nil }, txn.MaxAttempts(-1))
		})
		assert.ErrorIs(t, err, txn.ErrBadOption)
	})
}
