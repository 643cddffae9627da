package txn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/fakedb"
)

// goid returns the id of the calling goroutine, read from its stack header.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}

// event is one observer call, with the goroutine and the fake time it was
// made at.
type event struct {
	kind string // attempt, retry, gaveup, commit, admitted
	op   string
	goid uint64
	at   time.Time

	attempt  int // attempt: its number; retry: the attempt that failed
	attempts int // gaveup, commit
	class    txn.Class
	delay    time.Duration
	elapsed  time.Duration
	wait     time.Duration
	err      error
}

// strictObserver records every event of every Run, by operation name.
type strictObserver struct {
	clk *fakeclock.Clock
	mu  sync.Mutex
	all []event
}

func (o *strictObserver) add(e event) {
	e.goid = goid()
	e.at = o.clk.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, e)
}

func (o *strictObserver) AttemptStarted(_ context.Context, e txn.AttemptEvent) {
	o.add(event{kind: "attempt", op: e.Operation, attempt: e.Attempt})
}

func (o *strictObserver) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	o.add(event{kind: "retry", op: e.Operation, attempt: e.Attempt, class: e.Class, delay: e.Delay, err: e.Err})
}

func (o *strictObserver) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	o.add(event{kind: "gaveup", op: e.Operation, attempts: e.Attempts, class: e.Class, elapsed: e.Elapsed, err: e.Err})
}

func (o *strictObserver) Committed(_ context.Context, e txn.CommitEvent) {
	o.add(event{kind: "commit", op: e.Operation, attempts: e.Attempts, elapsed: e.Elapsed})
}

func (o *strictObserver) Admitted(_ context.Context, e txn.AdmissionEvent) {
	o.add(event{kind: "admitted", op: e.Operation, wait: e.Wait})
}

// of returns the events of the Runs named op.
func (o *strictObserver) of(op string) []event {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []event
	for _, e := range o.all {
		if e.op == op {
			out = append(out, e)
		}
	}
	return out
}

// want is what a Run named op should have shown.
type want struct {
	attempts int // runs of fn
	retries  []txn.Class
	commit   bool      // Committed, else GaveUp (unless none)
	class    txn.Class // GaveUp's class
	none     bool      // no terminal event (fn panicked or exited)
}

// checkRun checks the events of the one Run named op: every event is from
// the goroutine g that called Run; attempts are numbered 1, 2, ...; each
// retry names the attempt that just started and comes before the next one;
// exactly one terminal event, last, whose attempt count is the number of
// attempts started, whose elapsed time is the fake time since start, and
// whose error is the one Run returned.
func checkRun(t *testing.T, obs *strictObserver, op string, g uint64, start time.Time, runErr error, w want) {
	t.Helper()
	evs := obs.of(op)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, fmt.Sprintf("%s(%d/%d %v)", e.kind, e.attempt, e.attempts, e.class))
	}
	started, terminals := 0, 0
	var classes []txn.Class
	for i, e := range evs {
		assert.Equal(t, g, e.goid, "%s: event %d (%s) on another goroutine than Run's", op, i, e.kind)
		assert.False(t, e.at.Before(start), "%s: event before Run started", op)
		if terminals > 0 {
			t.Errorf("%s: event %s after the terminal event: %v", op, e.kind, kinds)
		}
		switch e.kind {
		case "attempt":
			started++
			assert.Equal(t, started, e.attempt, "%s: attempt numbers must follow 1, 2, ...: %v", op, kinds)
		case "retry":
			classes = append(classes, e.class)
			assert.Equal(t, started, e.attempt, "%s: a retry names the attempt that failed: %v", op, kinds)
			assert.GreaterOrEqual(t, e.delay, time.Duration(0), "%s: negative delay", op)
			assert.Error(t, e.err, "%s: a retry carries its error", op)
		case "gaveup", "commit":
			terminals++
			assert.Equal(t, started, e.attempts, "%s: terminal attempt count vs attempts started: %v", op, kinds)
			assert.Equal(t, e.at.Sub(start), e.elapsed, "%s: elapsed is the fake time since Run started", op)
			if e.kind == "gaveup" {
				assert.Same(t, runErr, e.err, "%s: GaveUp carries the error Run returned", op)
				assert.Equal(t, w.class, e.class, "%s: class of the give-up", op)
			}
		case "admitted":
			assert.GreaterOrEqual(t, e.wait, time.Duration(0), "%s: negative wait", op)
		}
	}
	assert.Equal(t, w.attempts, started, "%s: attempts started: %v", op, kinds)
	assert.Equal(t, w.retries, classes, "%s: retry classes: %v", op, kinds)
	if w.none {
		assert.Zero(t, terminals, "%s: %v", op, kinds)
		return
	}
	require.Equal(t, 1, terminals, "%s: exactly one terminal event: %v", op, kinds)
	last := evs[len(evs)-1]
	if w.commit {
		assert.NoError(t, runErr, op)
		assert.Equal(t, "commit", last.kind, "%s: %v", op, kinds)
	} else {
		assert.Error(t, runErr, op)
		assert.Equal(t, "gaveup", last.kind, "%s: %v", op, kinds)
	}
}

// cancelClock is a fake clock whose next Sleep cancels a context and
// reports it, as a cancellation arriving during the backoff would.
type cancelClock struct {
	*fakeclock.Clock
	mu     sync.Mutex
	cancel context.CancelFunc
	// obs is the observer of the Runner, for scenarios that look at
	// other Runs' events.
	obs *strictObserver
}

func (c *cancelClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	cancel := c.cancel
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		if err := c.Clock.Sleep(ctx, d/2); err != nil {
			return err
		}
		cancel()
		return ctx.Err()
	}
	return c.Clock.Sleep(ctx, d)
}

// TestObserverEventsAreConsistent runs fn through every way a Run can end
// and checks the events each Run showed its observer against what the Run
// did (see checkRun).
func TestObserverEventsAreConsistent(t *testing.T) {
	type scenario struct {
		name string
		opts []txn.RunnerOption
		prep func(db *fakedb.DB)
		// run makes the Run with the options given and returns its error.
		run  func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], clk *cancelClock, opts ...txn.CallOption) error
		want want
	}
	ok := func(ctx context.Context, tx *fakedb.Tx) error { tx.Write("k"); return nil }
	plain := func(fn func(context.Context, *fakedb.Tx) error) func(*testing.T, context.Context, *txn.Runner[*fakedb.Tx], *cancelClock, ...txn.CallOption) error {
		return func(_ *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
			return r.Run(ctx, fn, opts...)
		}
	}
	failN := func(errs ...error) func(*testing.T, context.Context, *txn.Runner[*fakedb.Tx], *cancelClock, ...txn.CallOption) error {
		n := 0
		return plain(func(ctx context.Context, tx *fakedb.Tx) error {
			n++
			if n <= len(errs) {
				return errs[n-1]
			}
			tx.Write("k")
			return nil
		})
	}
	R, P, A, C := txn.ClassRetryable, txn.ClassPermanent, txn.ClassAmbiguous, txn.ClassCommitRetryable
	// The scenarios keep state in their closures: make them afresh for
	// each run.
	scenarios := func() []scenario {
		return []scenario{
			{name: "commit", run: plain(ok), want: want{attempts: 1, commit: true}},
			{name: "two conflicts", run: failN(errConflict, errConflict), want: want{attempts: 3, retries: []txn.Class{R, R}, commit: true}},
			{name: "permanent", run: failN(errBad), want: want{attempts: 1, class: P}},
			{name: "fn marks Retry", run: failN(txn.Retry(errors.New("version moved"))), want: want{attempts: 2, retries: []txn.Class{R}, commit: true}},
			{name: "lost connection in fn", run: failN(errConnLost), want: want{attempts: 2, retries: []txn.Class{R}, commit: true}},
			{name: "max attempts", opts: []txn.RunnerOption{txn.MaxAttempts(2)}, run: failN(errConflict, errConflict, errConflict), want: want{attempts: 2, retries: []txn.Class{R}, class: R}},
			{name: "max elapsed", opts: []txn.RunnerOption{txn.MaxElapsed(time.Second), txn.WithBackoff(txn.Constant(400 * time.Millisecond))},
				run: failN(errConflict, errConflict, errConflict, errConflict), want: want{attempts: 3, retries: []txn.Class{R, R}, class: R}},
			{name: "budget exhausted", opts: []txn.RunnerOption{txn.RetryBudget(0, 0)}, run: failN(errConflict), want: want{attempts: 1, class: R}},
			{name: "commit unknown", prep: func(db *fakedb.DB) { db.FailCommit(errConnLost) }, run: plain(ok), want: want{attempts: 1, class: A}},
			{name: "commit ambiguous", prep: func(db *fakedb.DB) { db.FailCommit(errAmbig) }, run: plain(ok), want: want{attempts: 1, class: A}},
			{name: "commit unknown idempotent", prep: func(db *fakedb.DB) { db.FailCommit(errConnLost) },
				run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
					return r.Run(ctx, ok, append(opts, txn.Idempotent())...)
				}, want: want{attempts: 2, retries: []txn.Class{A}, commit: true}},
			{name: "commit retryable", prep: func(db *fakedb.DB) { db.FailCommit(errCommitRe, errCommitRe) }, run: plain(ok), want: want{attempts: 1, retries: []txn.Class{C, C}, commit: true}},
			{name: "commit retryable until max attempts", opts: []txn.RunnerOption{txn.MaxAttempts(2)}, prep: func(db *fakedb.DB) { db.FailCommit(errCommitRe, errCommitRe, errCommitRe) },
				run: plain(ok), want: want{attempts: 1, retries: []txn.Class{C}, class: C}},
			{name: "commit conflict", prep: func(db *fakedb.DB) { db.FailCommit(errConflict) }, run: plain(ok), want: want{attempts: 2, retries: []txn.Class{R}, commit: true}},
			{name: "begin conflict", prep: func(db *fakedb.DB) { db.FailBegin(errConflict) }, run: plain(ok), want: want{attempts: 1, retries: []txn.Class{R}, commit: true}},
			{name: "begin unreachable then reconnect budget empty", opts: []txn.RunnerOption{txn.ReconnectBudget(0, 0)},
				prep: func(db *fakedb.DB) {
					db.FailBegin(errConnLost, errConnLost, errConnLost, errConnLost, errConnLost, errConnLost, errConnLost, errConnLost)
				},
				run: plain(ok), want: want{attempts: 0, retries: []txn.Class{R, R, R, R, R}, class: R}},
			{name: "begin unreachable after an attempt", opts: []txn.RunnerOption{txn.NoReconnectBudget()},
				prep: func(db *fakedb.DB) { db.FailCommit(errConflict); db.FailBegin(nil, errConnLost) },
				run:  plain(ok), want: want{attempts: 2, retries: []txn.Class{R, R}, commit: true}},
			{name: "nested run on the same context", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				n := 0
				return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
					return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
						if n++; n == 1 {
							return errConflict
						}
						return nil
					}, txn.Operation("nested"))
				}, opts...)
			}, want: want{attempts: 2, retries: []txn.Class{R}, commit: true}},
			{name: "run on a fresh context inside fn", opts: []txn.RunnerOption{txn.NoAdaptive()}, run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], clk *cancelClock, opts ...txn.CallOption) error {
				n := 0
				var innerErr error
				g := goid()
				err := r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
					innerErr = r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
						if n++; n == 1 {
							return errConflict
						}
						return nil
					}, txn.Operation("inner"))
					return innerErr
				}, opts...)
				evs := clk.obs.of("inner")
				var kinds []string
				for _, e := range evs {
					assert.Equal(t, g, e.goid)
					kinds = append(kinds, e.kind)
				}
				assert.Equal(t, []string{"attempt", "retry", "attempt", "commit"}, kinds, "the inner Run retries on its own")
				return err
			}, want: want{attempts: 1, commit: true}},
			{name: "context cancelled in fn", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { cancel(); return ctx.Err() }, opts...)
			}, want: want{attempts: 1, class: P}},
			{name: "context cancelled in fn that returns a conflict", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { cancel(); return errConflict }, opts...)
			}, want: want{attempts: 1, class: R}},
			{name: "context cancelled before commit", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { cancel(); return nil }, opts...)
			}, want: want{attempts: 1, class: P}},
			{name: "context cancelled during backoff", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], clk *cancelClock, opts ...txn.CallOption) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				clk.mu.Lock()
				clk.cancel = cancel
				clk.mu.Unlock()
				return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { return errConflict }, opts...)
			}, want: want{attempts: 1, retries: []txn.Class{R}, class: R}},
			{name: "deadline before the backoff ends", opts: []txn.RunnerOption{txn.WithBackoff(txn.Constant(time.Hour))},
				run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], clk *cancelClock, opts ...txn.CallOption) error {
					ctx, cancel := context.WithTimeout(ctx, time.Minute)
					defer cancel()
					return r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { return errConflict }, opts...)
				}, want: want{attempts: 1, class: R}},
			{name: "context done before the first attempt", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], clk *cancelClock, opts ...txn.CallOption) error {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				return r.Run(ctx, ok, opts...)
			}, want: want{attempts: 0, class: P}},
			{name: "fn commits the transaction itself", run: plain(func(ctx context.Context, tx *fakedb.Tx) error { tx.Finish(); return errConflict }),
				want: want{attempts: 1, class: P}},
			{name: "fn panics", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				assert.PanicsWithValue(t, "boom", func() {
					_ = r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error { panic("boom") }, opts...)
				})
				return nil
			}, want: want{attempts: 1, none: true}},
			{name: "fn panics on its second attempt", run: func(t *testing.T, ctx context.Context, r *txn.Runner[*fakedb.Tx], _ *cancelClock, opts ...txn.CallOption) error {
				n := 0
				assert.PanicsWithValue(t, "boom", func() {
					_ = r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
						if n++; n == 2 {
							panic("boom")
						}
						return errConflict
					}, opts...)
				})
				return nil
			}, want: want{attempts: 2, retries: []txn.Class{R}, none: true}},
		}
	}
	for i := range scenarios() {
		for _, keys := range []bool{false, true} {
			sc := scenarios()[i]
			name := sc.name
			if keys {
				name += " with keys"
			}
			t.Run(name, func(t *testing.T) {
				db := fakedb.New()
				clk := &cancelClock{Clock: fakeclock.New(time.Now())}
				obs := &strictObserver{clk: clk.Clock}
				clk.obs = obs
				opts := append([]txn.RunnerOption{txn.WithClock(clk), txn.Seed(1), txn.WithObserver(obs)}, sc.opts...)
				r := txn.New[*fakedb.Tx](db.WithSavepoints(), opts...)
				require.NoError(t, r.Err())
				if sc.prep != nil {
					sc.prep(db)
				}
				callOpts := []txn.CallOption{txn.Operation(name)}
				if keys {
					callOpts = append(callOpts, txn.Keys("a", "b"))
				}
				start := clk.Now()
				err := sc.run(t, context.Background(), r, clk, callOpts...)
				checkRun(t, obs, name, goid(), start, err, sc.want)
				assert.Empty(t, obs.of(""), "every event carries the operation name")
			})
		}
	}
}

// failingScoper is a fake database whose Runs cannot start their state
// (as a MongoDB session that cannot be started).
type failingScoper struct {
	*fakedb.DB
	err error
}

func (s failingScoper) StartRun(ctx context.Context) (context.Context, func(), error) {
	return nil, nil, s.err
}

// TestObserverSeesRunScoperFailure: a Run whose backend cannot start its
// state returns that error, and its observer hears of it as a give-up.
func TestObserverSeesRunScoperFailure(t *testing.T) {
	clk := fakeclock.New(time.Now())
	obs := &strictObserver{clk: clk}
	scopeErr := errConnLost
	r := txn.New[*fakedb.Tx](failingScoper{DB: fakedb.New(), err: scopeErr}, txn.WithClock(clk), txn.WithObserver(obs), txn.Operation("scoped"))
	require.NoError(t, r.Err())
	start := clk.Now()
	err := r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return nil })
	require.ErrorIs(t, err, scopeErr)
	checkRun(t, obs, "scoped", goid(), start, err, want{attempts: 0, class: txn.ClassConnLost})
}

// TestSlogObserverLines: the log lines of a named Run that fails at BEGIN,
// conflicts once and commits, and of one that gives up, carry each event's
// attributes and the operation name.
func TestSlogObserverLines(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.Seed(1), txn.WithObserver(txn.SlogObserver(logger)),
		txn.WithBackoff(txn.Constant(10*time.Millisecond)), txn.Operation("POST /transfer"))
	db.FailBegin(errConflict)
	n := 0
	require.NoError(t, r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		if n++; n == 1 {
			return errConflict
		}
		return nil
	}, txn.Keys("acct:1")))
	require.ErrorIs(t, r.Run(context.Background(), func(context.Context, *fakedb.Tx) error { return errBad }), errBad)

	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		require.NoError(t, json.Unmarshal(l, &m), "%s", l)
		assert.Equal(t, "POST /transfer", m["operation"], "%s", l)
		delete(m, "time")
		lines = append(lines, m)
	}
	ms := float64(10 * time.Millisecond)
	assert.Equal(t, []map[string]any{
		{"level": "INFO", "msg": "txn retry", "attempt": 0.0, "class": "retryable", "delay": ms, "error": "conflict", "operation": "POST /transfer"},
		{"level": "DEBUG", "msg": "txn attempt", "attempt": 1.0, "key": "acct:1", "operation": "POST /transfer"},
		{"level": "INFO", "msg": "txn retry", "attempt": 1.0, "class": "retryable", "delay": ms, "error": "conflict", "operation": "POST /transfer"},
		{"level": "DEBUG", "msg": "txn attempt", "attempt": 2.0, "key": "acct:1", "operation": "POST /transfer"},
		{"level": "DEBUG", "msg": "txn committed", "attempts": 2.0, "elapsed": 2 * ms, "operation": "POST /transfer"},
		{"level": "DEBUG", "msg": "txn attempt", "attempt": 1.0, "key": "", "operation": "POST /transfer"},
		{"level": "WARN", "msg": "txn gave up", "attempts": 1.0, "elapsed": 0.0, "class": "permanent", "error": "unique violation", "operation": "POST /transfer"},
	}, lines)
}

// TestObserverKeyWaits: a Run that waits for a conflict key another Run
// holds reports, on its own goroutine and before its attempt, one Admitted
// event with the key, the operation and the fake time it waited; a Run
// whose context ends while it waits reports one give-up of 0 attempts and
// nothing else.
func TestObserverKeyWaits(t *testing.T) {
	db := fakedb.New()
	clk := fakeclock.New(time.Now())
	obs := &strictObserver{clk: clk}
	r := txn.New[*fakedb.Tx](db, txn.WithClock(clk), txn.Seed(1), txn.WithObserver(obs), txn.NoAdaptive())
	require.NoError(t, r.Err())
	ctx := context.Background()

	entered, release := make(chan struct{}), make(chan struct{})
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- r.Run(ctx, func(context.Context, *fakedb.Tx) error {
			close(entered)
			<-release
			return nil
		}, txn.Keys("k"), txn.Operation("holder"))
	}()
	<-entered

	type result struct {
		err  error
		goid uint64
	}
	waiter := make(chan result, 1)
	start := clk.Now()
	go func() {
		err := r.Run(ctx, func(context.Context, *fakedb.Tx) error { return nil }, txn.Keys("k"), txn.Operation("waiter"))
		waiter <- result{err, goid()}
	}()
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan result, 1)
	go func() {
		err := r.Run(cctx, func(context.Context, *fakedb.Tx) error { return nil }, txn.Keys("k"), txn.Operation("cancelled"))
		cancelled <- result{err, goid()}
	}()
	for txn.KeyWaiters(r, "k") != 2 {
		runtime.Gosched()
	}
	cancel()
	c := <-cancelled
	require.ErrorIs(t, c.err, context.Canceled)
	checkRun(t, obs, "cancelled", c.goid, start, c.err, want{attempts: 0, class: txn.ClassRetryable})

	clk.Advance(250 * time.Millisecond)
	close(release)
	require.NoError(t, <-holderDone)
	w := <-waiter
	checkRun(t, obs, "waiter", w.goid, start, w.err, want{attempts: 1, commit: true})
	evs := obs.of("waiter")
	require.NotEmpty(t, evs)
	assert.Equal(t, "admitted", evs[0].kind, "the wait is reported before the attempt")
	assert.Equal(t, 250*time.Millisecond, evs[0].wait)
	assert.Empty(t, obs.of(""), "every event carries the operation name")
}
