package txnsqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/fakeclock"
)

// FuzzOptions builds a SQLite Runner, and a call, from fuzzed option
// values (negative, zero, huge) and runs a transaction that asks for a
// retry a fuzzed number of times. Whatever the values, New and Run never
// panic or hang: an invalid option is an error matching txn.ErrBadOption
// from both Err and Run, and a valid configuration either commits exactly
// once or gives up with a *txn.GiveUpError, having committed nothing. The
// Runner's clock is fake, so huge backoffs cost no time; the context's
// deadline only turns a hang into a failure. Its seed corpus runs in plain
// go test.
func FuzzOptions(f *testing.F) {
	type seed struct {
		attempts, callAttempts            int
		elapsed, base, maxDelay, rollback int64
		kind                              uint8
		adaptive                          int
		ratio, perSecond                  float64
		failures                          uint8
		idempotent                        bool
		key                               string
	}
	for _, s := range []seed{
		{attempts: 10, callAttempts: 3, base: int64(5 * time.Millisecond), maxDelay: int64(time.Second), rollback: int64(5 * time.Second), failures: 2, key: "a"},
		{attempts: 0, elapsed: 0, base: 0, maxDelay: 0, rollback: 1, failures: 5},
		{attempts: -1, rollback: 1},
		{attempts: 3, elapsed: -1, rollback: 1},
		{attempts: 3, base: -1, maxDelay: 10, rollback: 1},
		{attempts: 3, base: 10, maxDelay: 1, rollback: 1},
		{attempts: 3, rollback: 0},
		{attempts: 3, rollback: math.MinInt64},
		{attempts: math.MaxInt, base: math.MaxInt64, maxDelay: math.MaxInt64, rollback: math.MaxInt64, failures: 3},
		{attempts: 4, base: 1 << 62, maxDelay: math.MaxInt64, rollback: 1, failures: 3},
		{attempts: 4, base: 1 << 62, maxDelay: math.MaxInt64, rollback: 1, failures: 3, kind: 1},
		{attempts: 4, base: 0, maxDelay: math.MaxInt64, rollback: 1, failures: 3, kind: 2},
		{attempts: 4, base: math.MaxInt64, maxDelay: math.MaxInt64, rollback: 1, failures: 3, kind: 3},
		{attempts: 4, base: math.MaxInt64, maxDelay: math.MaxInt64, rollback: 1, failures: 3, kind: 4},
		{attempts: 4, base: 0, maxDelay: 0, rollback: 1, failures: 3, kind: 5},
		{attempts: 2, rollback: 1, adaptive: math.MaxInt, failures: 1},
		{attempts: 2, rollback: 1, adaptive: -1},
		{attempts: 2, rollback: 1, adaptive: 1, failures: 4},
		{attempts: 2, rollback: 1, ratio: math.NaN(), perSecond: 1},
		{attempts: 2, rollback: 1, ratio: math.Inf(1), perSecond: 1},
		{attempts: 0, rollback: 1, ratio: math.MaxFloat64, perSecond: math.MaxFloat64, failures: 10},
		{attempts: 0, rollback: 1, ratio: 0, perSecond: 0.5, failures: 10},
		{attempts: 3, callAttempts: -5, rollback: 1},
		{attempts: 3, callAttempts: math.MinInt, rollback: 1},
		{attempts: 3, rollback: 1, key: "", idempotent: true, failures: 1},
		{attempts: 0, elapsed: math.MaxInt64, rollback: 1, failures: 20, key: "k"},
		{attempts: 0, elapsed: 1, base: 1, maxDelay: 1, rollback: 1, failures: 20},
	} {
		f.Add(s.attempts, s.callAttempts, s.elapsed, s.base, s.maxDelay, s.rollback, s.kind, s.adaptive,
			s.ratio, s.perSecond, s.failures, s.idempotent, s.key)
	}

	db, err := txnsqlite.Open(filepath.Join(f.TempDir(), "fuzz.db"))
	require.NoError(f, err)
	f.Cleanup(func() { _ = db.Close() })
	_, err = db.Exec("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT NOT NULL)")
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, attempts, callAttempts int, elapsed, base, maxDelay, rollback int64, kind uint8, adaptive int,
		ratio, perSecond float64, failures uint8, idempotent bool, key string) {
		var backoff txn.Backoff
		b, c := time.Duration(base), time.Duration(maxDelay)
		switch kind % 6 {
		case 0:
			backoff = txn.FullJitter(b, c)
		case 1:
			backoff = txn.EqualJitter(b, c)
		case 2:
			backoff = txn.DecorrelatedJitter(b, c)
		case 3:
			backoff = txn.NoJitter(b, c)
		case 4:
			backoff = txn.Constant(b)
		default:
			backoff = txn.BackoffFunc(nil)
		}
		opts := []txn.RunnerOption{
			txn.WithClock(fakeclock.New(time.Now())), txn.Seed(uint64(attempts)),
			txn.MaxAttempts(attempts), txn.MaxElapsed(time.Duration(elapsed)), txn.WithBackoff(backoff),
			txn.RollbackTimeout(time.Duration(rollback)), txn.Adaptive(adaptive),
		}
		if ratio != 0 || perSecond != 0 {
			opts = append(opts, txn.RetryBudget(ratio, perSecond))
		}
		r := txnsqlite.New(db, opts...)

		var call []txn.CallOption
		if callAttempts != 0 {
			call = append(call, txn.MaxAttempts(callAttempts))
		}
		if key != "" || idempotent {
			call = append(call, txn.Keys(key))
		}
		if idempotent {
			call = append(call, txn.Idempotent())
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tag := t.Name()
		_, err := db.ExecContext(ctx, "DELETE FROM runs WHERE tag = ?", tag)
		require.NoError(t, err)
		calls := 0
		runErr := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			calls++
			if _, err := tx.ExecContext(ctx, "INSERT INTO runs (tag) VALUES (?)", tag); err != nil {
				return err
			}
			if calls <= int(failures) {
				return txn.Retry(errors.New("simulated conflict"))
			}
			return nil
		}, call...)
		require.NoError(t, ctx.Err(), "Run returned only when the safety deadline ended")

		var committed int
		require.NoError(t, db.QueryRowContext(ctx, "SELECT count(*) FROM runs WHERE tag = ?", tag).Scan(&committed))
		switch {
		case r.Err() != nil:
			require.ErrorIs(t, r.Err(), txn.ErrBadOption)
			require.ErrorIs(t, runErr, txn.ErrBadOption)
			require.Zero(t, calls)
		case errors.Is(runErr, txn.ErrBadOption):
			require.Zero(t, calls, "an invalid call option runs nothing")
		case runErr == nil:
			require.Equal(t, int(failures)+1, calls)
			require.Equal(t, 1, committed)
		default:
			var gu *txn.GiveUpError
			require.ErrorAs(t, runErr, &gu, "a valid configuration gives up with a GiveUpError: %v", runErr)
			require.False(t, gu.Ambiguous)
			require.Equal(t, calls, gu.Attempts)
			require.Zero(t, committed)
		}
	})
}
