package txn_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

// beginsFailed counts the tries whose BEGIN failed in db's log.
func beginsFailed(db *fakedb.DB) int {
	n := 0
	for _, l := range db.Log() {
		if l == "begin failed" {
			n++
		}
	}
	return n
}

// downForever scripts n failing BEGINs: the database is stopped.
func downForever(db *fakedb.DB, n int) {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = errConnLost
	}
	db.FailBegin(errs...)
}

// TestReconnectBudgetFailsFastWhenDown: with the default Runner, a database
// that refuses every connection costs about one try per Run (the full burst
// of DefaultReconnectBurst, then the reserve), every Run fails with
// ErrUnavailable after one or two tries, fn never runs, and the error says
// how many times fn ran and how many times the database could not be
// reached.
func TestReconnectBudgetFailsFastWhenDown(t *testing.T) {
	db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(0)))
	const runs = 1000
	downForever(db, 100*runs)
	calls := 0
	unavailable := 0
	for i := 0; i < runs; i++ {
		err := r.Run(context.Background(), failing(&calls, "k"))
		var gu *txn.GiveUpError
		require.ErrorAs(t, err, &gu)
		assert.ErrorIs(t, err, errConnLost, "the last database error is kept")
		assert.Zero(t, gu.Attempts)
		assert.GreaterOrEqual(t, gu.Unreachable, 1)
		if errors.Is(err, txn.ErrUnavailable) {
			unavailable++
		}
	}
	assert.Zero(t, calls, "fn never ran")
	tries := beginsFailed(db)
	t.Logf("database down: %d Runs, %d connection attempts (%.3f per Run)", runs, tries, float64(tries)/runs)
	// One try per Run, plus the starting burst and the first second's reserve.
	assert.Equal(t, runs+txn.DefaultReconnectBurst+1, tries)
	assert.Equal(t, runs, unavailable)
	assert.LessOrEqual(t, float64(tries)/runs, 1.2)

	db2, _, r2 := setup(t, false, txn.WithBackoff(txn.Constant(0)))
	downForever(db2, 100)
	err := r2.Run(context.Background(), failing(&calls, "k"))
	assert.Equal(t, "txn: gave up after fn ran 0 times and the database could not be reached 7 times in 0s: "+
		"database unavailable: connection reset", err.Error(),
		"the first Run spends the burst and the reserve")
}

// TestReconnectBudgetLeavesContentionAlone: with the reconnect budget
// empty, retries after fn ran (conflicts, a connection lost during a
// statement) still go up to MaxAttempts.
func TestReconnectBudgetLeavesContentionAlone(t *testing.T) {
	db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(0)), txn.ReconnectBudget(0, 0))
	downForever(db, 30)
	calls := 0
	for i := 0; i < 3; i++ {
		_ = r.Run(context.Background(), failing(&calls, "k"))
	}
	require.Zero(t, calls)
	err := r.Run(context.Background(), failing(&calls, "k"))
	require.ErrorIs(t, err, txn.ErrUnavailable, "the budget is empty")
	db.ClearBegin()

	calls = 0
	errs := []error{errConflict, errConflict, errConnLost, errConflict, errConflict, errConflict, errConflict, errConflict, errConflict}
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errs...)))
	assert.Equal(t, txn.DefaultMaxAttempts, calls, "nine retries after fn ran, none refused")
}

// TestReconnectBudgetRefillsOnSuccessfulBegins: each try that reached the
// database deposits the ratio, so a Runner that has been working may again retry a
// failed BEGIN; the reserve refills with time.
func TestReconnectBudgetRefillsOnSuccessfulBegins(t *testing.T) {
	db, clk, r := setup(t, false, txn.WithBackoff(txn.Constant(0)), txn.ReconnectBudget(0.2, 1))
	noop := func(ctx context.Context, tx *fakedb.Tx) error { return nil }
	// retries returns how many failed BEGINs a Run retried while the
	// database refused three connections before coming back.
	retries := func() int {
		before := beginsFailed(db)
		downForever(db, 3)
		err := r.Run(context.Background(), noop)
		tries := beginsFailed(db) - before
		db.ClearBegin()
		if err != nil {
			require.ErrorIs(t, err, txn.ErrUnavailable)
			return tries - 1
		}
		return tries
	}
	assert.Equal(t, 3, retries(), "the starting burst")
	assert.Equal(t, 3, retries(), "the rest of the burst and the reserve")
	assert.Equal(t, 0, retries(), "empty: one try, then ErrUnavailable")
	for i := 0; i < 10; i++ {
		require.NoError(t, r.Run(context.Background(), noop))
	}
	assert.Equal(t, 2, retries(), "ten BEGINs at 0.2 bought two retries")
	clk.Advance(time.Second)
	assert.Equal(t, 1, retries(), "a second's reserve bought one retry")
}

// TestMaxAttemptsBoundsFailingBegins: without the budget, MaxAttempts still
// stops a Run whose BEGIN keeps failing; it bounds fn's runs plus the tries
// that could not reach the database.
func TestMaxAttemptsBoundsFailingBegins(t *testing.T) {
	db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(0)), txn.NoReconnectBudget(), txn.MaxAttempts(4))
	downForever(db, 3)
	calls := 0
	err := r.Run(context.Background(), failing(&calls, "k", errConflict))
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	assert.ErrorIs(t, err, txn.ErrAttemptsExhausted)
	assert.Equal(t, 1, gu.Attempts)
	assert.Equal(t, 3, gu.Unreachable)
	assert.Equal(t, 1, calls)
	assert.Contains(t, err.Error(), "gave up after fn ran 1 time and the database could not be reached 3 times")

	downForever(db, 100)
	err = r.Run(context.Background(), failing(&calls, "k"))
	require.ErrorAs(t, err, &gu)
	assert.Equal(t, 4, gu.Unreachable)
	assert.Equal(t, 0, gu.Attempts)
}

func TestReconnectBudgetOptionErrors(t *testing.T) {
	for _, o := range []txn.RunnerOption{txn.ReconnectBudget(-1, 0), txn.ReconnectBudget(0, posInf()), txn.ReconnectBudget(posInf(), 1)} {
		r := txn.New[*fakedb.Tx](fakedb.New(), o)
		assert.ErrorIs(t, r.Err(), txn.ErrBadOption, fmt.Sprint(o))
	}
}

// lazyDB is a fake backend whose transactions reach the server only with
// fn's first operation, as MongoDB's do: errNoServer from fn means that no
// server could be reached.
type lazyDB struct{ *fakedb.DB }

var errNoServer = fakedb.Err(txn.ClassRetryable, "server selection error: no server")

func (lazyDB) Unreachable(err error) bool { return errors.Is(err, errNoServer) }

// TestUnreachableClassifierFailsFast: on a backend whose BEGIN cannot
// fail, a fn that finds no server ends the Run at once with ErrUnavailable
// (the driver already waited for a server), and the error says fn ran and
// the database could not be reached.
func TestUnreachableClassifierFailsFast(t *testing.T) {
	db := lazyDB{fakedb.New()}
	r := txn.New[*fakedb.Tx](db, txn.WithClock(newClock(db.DB)), txn.Seed(1))
	require.NoError(t, r.Err())
	calls := 0
	for i := 0; i < 10; i++ {
		err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
			calls++
			return errNoServer
		})
		require.ErrorIs(t, err, txn.ErrUnavailable)
		assert.ErrorIs(t, err, errNoServer)
		assert.Equal(t, "txn: gave up after fn ran 1 time and the database could not be reached 1 time in 0s: "+
			"database unavailable: server selection error: no server", err.Error())
	}
	assert.Equal(t, 10, calls, "one try per Run")
	calls = 0
	db.FailBegin(errConflict)
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k", errConflict, errConflict)),
		"other errors are retried as usual")
	assert.Equal(t, 3, calls)
}

// sentDB is a fake backend whose connection check recognises errUnsent, a
// connection that failed before anything was sent, which its table calls
// retryable (as pgx's SafeToRetry errors are).
type sentDB struct{ *fakedb.DB }

var errUnsent = fakedb.Err(txn.ClassRetryable, "write failed, nothing sent")

func (sentDB) ClassifyConn(err error) txn.Class {
	if errors.Is(err, errUnsent) {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// TestConnectionFailuresLeaveAdaptiveLimit: a connection lost in fn,
// whether the table calls it a lost connection or a retryable error, is
// retried but does not cut the adaptive limit; a conflict does.
func TestConnectionFailuresLeaveAdaptiveLimit(t *testing.T) {
	for _, e := range []error{errUnsent, errConnLost} {
		// The limit starts at its ceiling, so that only a cut could lower it.
		r := txn.New[*fakedb.Tx](sentDB{fakedb.New()}, txn.WithBackoff(txn.Constant(0)), txn.StartOpen())
		calls := 0
		require.NoError(t, r.Run(context.Background(), failing(&calls, "k", e, e)))
		assert.Equal(t, 3, calls)
		assert.Equal(t, txn.DefaultAdaptiveMax, r.AdmissionStats().Limit, "%v", e)
	}
	r := txn.New[*fakedb.Tx](sentDB{fakedb.New()}, txn.WithBackoff(txn.Constant(0)), txn.StartOpen())
	calls := 0
	require.ErrorIs(t, r.Run(context.Background(), failing(&calls, "k", errConflict), txn.MaxAttempts(1)), txn.ErrAttemptsExhausted)
	assert.Equal(t, 1, r.AdmissionStats().Limit, "a conflict cuts the limit")
}

// TestReconnectBudgetLeavesCommitRetries: commit retries after a try that
// could not reach the database do not spend the reconnect budget.
func TestReconnectBudgetLeavesCommitRetries(t *testing.T) {
	db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(0)), txn.ReconnectBudget(0, 0))
	db.FailBegin(errConnLost)
	db.FailCommit(errCommitRe, errCommitRe, errCommitRe, errCommitRe, errCommitRe, errCommitRe)
	calls := 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k")))
	assert.Equal(t, 1, calls)
	assert.Equal(t, 1, db.Committed("k"))
}

// TestReconnectBudgetLeavesBusyBeginAlone: a BEGIN refused because of
// contention (SQLite's BEGIN IMMEDIATE answering SQLITE_BUSY, say) reached
// the database: it is retried up to MaxAttempts, and never spends the
// reconnect budget, even an empty one. fn does not run for it, so it is not
// counted as an attempt.
func TestReconnectBudgetLeavesBusyBeginAlone(t *testing.T) {
	db, _, r := setup(t, false, txn.WithBackoff(txn.Constant(0)), txn.ReconnectBudget(0, 0))
	downForever(db, 10)
	calls := 0
	for i := 0; i < 3; i++ {
		_ = r.Run(context.Background(), failing(&calls, "k"))
	}
	require.ErrorIs(t, r.Run(context.Background(), failing(&calls, "k")), txn.ErrUnavailable, "the budget is empty")
	db.ClearBegin()

	before := beginsFailed(db)
	db.FailBegin(errConflict, errConflict, errConflict)
	calls = 0
	require.NoError(t, r.Run(context.Background(), failing(&calls, "k")))
	assert.Equal(t, 1, calls, "fn ran once, after three busy BEGINs")
	assert.Equal(t, 3, beginsFailed(db)-before, "the busy BEGINs were retried")
}

// cancelBeginDB is a fake backend whose BEGIN ends the caller's context
// and then fails as a connection failure, as pgx reports a BEGIN (or a
// wait for a key held in the database) that its context interrupted.
type cancelBeginDB struct {
	*fakedb.DB
	cancel context.CancelFunc
}

var errConnInterrupted = fakedb.Err(txn.ClassConnLost, "conn closed: context canceled")

func (d cancelBeginDB) Begin(context.Context, []txn.BeginOption[*fakedb.Tx]) (*fakedb.Tx, error) {
	d.cancel()
	return nil, errConnInterrupted
}

// TestBeginEndedByContextIsNotUnreachable: a BEGIN that failed because the
// caller's context ended is not counted as a database that could not be
// reached: the give-up names the context, not an unavailable database.
func TestBeginEndedByContextIsNotUnreachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := cancelBeginDB{DB: fakedb.New(), cancel: cancel}
	r := txn.New[*fakedb.Tx](db, txn.WithClock(newClock(db.DB)), txn.Seed(1))
	err := r.Run(ctx, func(context.Context, *fakedb.Tx) error {
		t.Fatal("fn ran without a transaction")
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, txn.ErrUnavailable)
	assert.NotContains(t, err.Error(), "could not be reached")
	var gu *txn.GiveUpError
	if errors.As(err, &gu) {
		assert.Zero(t, gu.Unreachable)
	}
}
