package txn_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

// Issue 11, item 9: no constructor or option, however extreme its values,
// makes Run panic or hang.
func TestExtremeOptionsNeverPanicOrHang(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var nilClock *fakeclock.Clock
	var nilObs *recorder
	for name, opt := range map[string]txn.RunnerOption{
		"nil BackoffFunc":       txn.WithBackoff(txn.BackoffFunc(nil)),
		"typed nil Backoff":     txn.WithBackoff((*ptrBackoff)(nil)),
		"typed nil Clock":       txn.WithClock(nilClock),
		"NaN budget":            txn.RetryBudget(math.NaN(), 1),
		"negative Adaptive":     txn.Adaptive(-1),
		"min int attempts":      txn.MaxAttempts(math.MinInt),
		"min duration elapsed":  txn.MaxElapsed(math.MinInt64),
		"min duration rollback": txn.RollbackTimeout(math.MinInt64),
	} {
		t.Run("refused "+name, func(t *testing.T) {
			r := txn.New[*fakedb.Tx](fakedb.New(), opt)
			assert.ErrorIs(t, r.Err(), txn.ErrBadOption)
			assert.ErrorIs(t, r.Run(ctx, func(context.Context, *fakedb.Tx) error { return nil }), txn.ErrBadOption)
		})
	}
	for name, opt := range map[string]txn.RunnerOption{
		"FullJitter max":               txn.WithBackoff(txn.FullJitter(math.MaxInt64, math.MaxInt64)),
		"FullJitter 1<<62":             txn.WithBackoff(txn.FullJitter(1<<62, math.MaxInt64)),
		"FullJitter 1ns max":           txn.WithBackoff(txn.FullJitter(1, math.MaxInt64)),
		"EqualJitter max":              txn.WithBackoff(txn.EqualJitter(math.MaxInt64, math.MaxInt64)),
		"DecorrelatedJitter 0 max":     txn.WithBackoff(txn.DecorrelatedJitter(0, math.MaxInt64)),
		"DecorrelatedJitter max":       txn.WithBackoff(txn.DecorrelatedJitter(math.MaxInt64, math.MaxInt64)),
		"NoJitter max":                 txn.WithBackoff(txn.NoJitter(math.MaxInt64, math.MaxInt64)),
		"Constant max":                 txn.WithBackoff(txn.Constant(math.MaxInt64)),
		"Adaptive max int":             txn.Adaptive(math.MaxInt),
		"Adaptive 1<<53+1":             txn.Adaptive(1<<53 + 1),
		"MaxAttempts max int":          txn.MaxAttempts(math.MaxInt),
		"MaxElapsed max":               txn.MaxElapsed(math.MaxInt64),
		"RollbackTimeout max":          txn.RollbackTimeout(math.MaxInt64),
		"RetryBudget huge":             txn.RetryBudget(math.MaxFloat64, math.MaxFloat64),
		"RetryBudget zero":             txn.RetryBudget(0, 0),
		"typed nil Observer":           txn.WithObserver(nilObs),
		"typed nil in Observers":       txn.WithObserver(txn.Observers(nilObs, &recorder{})),
		"Seed max":                     txn.Seed(math.MaxUint64),
		"Adaptive 1":                   txn.Adaptive(1),
		"Adaptive 0 (default)":         txn.Adaptive(0),
		"custom backoff huge negative": txn.WithBackoff(txn.BackoffFunc(func(int, time.Duration, *rand.Rand) time.Duration { return math.MinInt64 })),
	} {
		t.Run("usable "+name, func(t *testing.T) {
			db := fakedb.New()
			r := txn.New[*fakedb.Tx](db, txn.WithClock(fakeclock.New(time.Now())), opt)
			require.NoError(t, r.Err())
			calls := 0
			err := r.Run(ctx, failing(&calls, "k", errConflict, errConflict, errConflict), txn.MaxAttempts(5))
			if err != nil {
				var gu *txn.GiveUpError
				require.ErrorAs(t, err, &gu, "%v", err)
			} else {
				assert.Equal(t, 4, calls)
			}
			require.NoError(t, r.Run(ctx, func(context.Context, *fakedb.Tx) error { return nil }))
		})
	}
}

// ptrBackoff is a Backoff with a pointer receiver, for typed nils.
type ptrBackoff struct{ d time.Duration }

func (b *ptrBackoff) Delay(int, time.Duration, *rand.Rand) time.Duration { return b.d }

// TestBadOptionMessages checks the text of the errors of bad options, in
// New and per call: one "txn: invalid option: " prefix, then what was
// wrong. A built-in backoff built with bad arguments used to read "txn:
// invalid option: txn: invalid option: FullJitter ...", and WithBackoff(nil)
// "the policy is a nil <nil>".
func TestBadOptionMessages(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context, *fakedb.Tx) error { return nil }
	for _, c := range []struct {
		name string
		opt  txn.Option
		want string
	}{
		{"FullJitter negative base", txn.WithBackoff(txn.FullJitter(-1, 5)), "txn: invalid option: FullJitter base -1ns is negative"},
		{"DecorrelatedJitter cap below base", txn.WithBackoff(txn.DecorrelatedJitter(10, 1)), "txn: invalid option: DecorrelatedJitter cap 1ns is below base 10ns"},
		{"Constant negative", txn.WithBackoff(txn.Constant(-1)), "txn: invalid option: Constant base -1ns is negative"},
		{"nil Backoff", txn.WithBackoff(nil), "txn: invalid option: WithBackoff(nil)"},
		{"typed nil Backoff", txn.WithBackoff((*ptrBackoff)(nil)), "txn: invalid option: WithBackoff(nil): the policy is a nil *txn_test.ptrBackoff"},
		{"negative MaxAttempts", txn.MaxAttempts(-1), "txn: invalid option: MaxAttempts(-1) is negative"},
		{"negative MaxElapsed", txn.MaxElapsed(-time.Second), "txn: invalid option: MaxElapsed(-1s) is negative"},
		{"zero RollbackTimeout", txn.RollbackTimeout(0), "txn: invalid option: RollbackTimeout(0s) must be positive"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := txn.New[*fakedb.Tx](fakedb.New(), c.opt)
			require.ErrorIs(t, r.Err(), txn.ErrBadOption)
			assert.EqualError(t, r.Err(), c.want)
			err := txn.New[*fakedb.Tx](fakedb.New()).Run(ctx, ok, c.opt)
			require.ErrorIs(t, err, txn.ErrBadOption)
			assert.EqualError(t, err, c.want, "per call")
		})
	}
}
