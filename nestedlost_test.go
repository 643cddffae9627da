package txn_test

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

// TestNestedLevelLostWhileItRuns: a nested level (Run or Savepoint) whose
// fn swallows the retryable error of a level nested in it. The whole
// transaction was rolled back when that error was seen, so the level's
// work is gone: it must return that error, not nil, and must not send
// RELEASE SAVEPOINT (or ROLLBACK TO SAVEPOINT) to the transaction that
// has ended. (Found by FuzzRun.)
func TestNestedLevelLostWhileItRuns(t *testing.T) {
	for _, tc := range []struct {
		name       string
		savepoints bool
		middle     func(ctx context.Context, r *txn.Runner[*fakedb.Tx], body func(context.Context, *fakedb.Tx) error) error
		bodyErr    error // what the middle level's fn returns after swallowing
	}{
		{"nested Run returns nil", true, runNested, nil},
		{"Savepoint returns nil", true, savepointNested, nil},
		{"nested Run returns a permanent error", true, runNested, errBad},
		{"nested Run without savepoints returns nil", false, runNested, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _, r := setup(t, tc.savepoints)
			calls := 0
			var middleErrs []error
			err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
				calls++
				tx.Write("outer")
				if calls > 1 {
					return nil
				}
				middleErr := tc.middle(ctx, r, func(ctx context.Context, tx *fakedb.Tx) error {
					inner := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
						tx.Write("inner")
						return errConflict
					})
					require.ErrorIs(t, inner, errConflict)
					return tc.bodyErr // swallowed
				})
				middleErrs = append(middleErrs, middleErr)
				return nil // and the outer fn swallows the middle level's error
			})
			require.NoError(t, err)
			assert.Equal(t, 2, calls, "the lost attempt is run again")
			require.Len(t, middleErrs, 1)
			if tc.bodyErr != nil {
				assert.ErrorIs(t, middleErrs[0], tc.bodyErr, "the level's own permanent error is kept")
			} else {
				assert.ErrorIs(t, middleErrs[0], errConflict, "a level whose work was rolled back with the transaction reports why")
			}
			log := db.Log()
			end := slices.Index(log, "rollback 1")
			require.GreaterOrEqual(t, end, 0, "%v", log)
			for _, l := range log[end+1:] {
				assert.False(t, strings.HasPrefix(l, "release 1") || strings.HasPrefix(l, "rollback to 1"),
					"%q sent to transaction 1 after it was rolled back: %v", l, log)
			}
			assert.Equal(t, 1, db.Committed("outer"))
			assert.Zero(t, db.Committed("inner"))
		})
	}
}

func runNested(ctx context.Context, r *txn.Runner[*fakedb.Tx], body func(context.Context, *fakedb.Tx) error) error {
	return r.Run(ctx, body)
}

func savepointNested(ctx context.Context, _ *txn.Runner[*fakedb.Tx], body func(context.Context, *fakedb.Tx) error) error {
	return txn.Savepoint(ctx, body)
}

// TestPanicAfterLostAttemptRollsBackOnce: a nested Run's retryable error
// rolled the whole transaction back; fn swallows it, then panics or exits
// its goroutine. Run must not send a second ROLLBACK to the transaction
// it already rolled back. (Found by FuzzRun.)
func TestPanicAfterLostAttemptRollsBackOnce(t *testing.T) {
	for _, exit := range []string{"panic", "Goexit"} {
		t.Run(exit, func(t *testing.T) {
			db, _, r := setup(t, true)
			returned, _, p := runOnGoroutine(func() error {
				return r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
					_ = r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { return errConflict })
					if exit == "panic" {
						panic("boom")
					}
					runtime.Goexit()
					return nil
				})
			})
			assert.False(t, returned)
			if exit == "panic" {
				assert.Equal(t, "boom", p)
			} else {
				assert.Nil(t, p)
			}
			assert.Equal(t, []string{"begin 1", "savepoint 1 txn_sp_1", "rollback 1"}, db.Log(),
				"one ROLLBACK, none on the finished transaction")
		})
	}
}
