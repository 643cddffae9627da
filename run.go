package txn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/txnkit/txn/internal/errchain"
)

// Runner runs functions in transactions of one database and retries them.
// Build it with a backend's constructor (or New) and share it: it is safe
// for concurrent use, and its retry budget and contention control are shared
// by all its callers.
type Runner[T any] struct {
	*shared[T]
	// begin holds the options WithBegin set on this view of the Runner.
	begin []BeginOption[T]
	// intercept is the fault injector WithInterceptor set on this view.
	intercept Interceptor
}

// shared is the state of a Runner that every view made by WithBegin shares.
type shared[T any] struct {
	backend Backend[T]
	sp      Savepointer[T]
	scoper  RunScoper
	ascoper AttemptScoper[T]
	binder  HandleBinder[T]
	cfg     config

	adaptive  *adaptive
	retryLane *adaptive
	keys      keyTable
	locker    KeyLocker[T]
	bounder   LockWaitBounder[T]

	seedMu  sync.Mutex
	seedSrc *rand.PCG
}

// New returns a Runner over backend b, configured by opts. An invalid
// option, or a nil backend, does not panic: the Runner's Err reports it and
// every Run returns it.
func New[T any](b Backend[T], opts ...RunnerOption) *Runner[T] {
	s := &shared[T]{backend: b, cfg: defaultConfig()}
	r := &Runner[T]{shared: s}
	if b == nil {
		s.cfg.err = ErrNilRunner
		return r
	}
	s.sp, _ = b.(Savepointer[T])
	s.scoper, _ = b.(RunScoper)
	s.ascoper, _ = b.(AttemptScoper[T])
	s.binder, _ = b.(HandleBinder[T])
	s.bounder, _ = b.(LockWaitBounder[T])
	for _, o := range opts {
		if o != nil {
			o.applyRunner(&s.cfg)
		}
	}
	if s.cfg.adaptiveMax > 0 {
		ceiling := s.cfg.adaptiveMax
		if ps, ok := b.(PoolSizer); ok {
			if n := ps.PoolSize(); n > 0 && n < ceiling {
				ceiling = n
			}
		}
		if s.cfg.startOpen {
			s.adaptive = newAdaptive(ceiling, s.cfg.clock)
			s.retryLane = newAdaptive(retryLaneCeiling(ceiling), s.cfg.clock)
		} else {
			s.adaptive = newSlowStart(ceiling, s.cfg.clock)
			s.retryLane = newSlowStart(retryLaneCeiling(ceiling), s.cfg.clock)
		}
	}
	if s.cfg.dbKeys {
		if s.locker, _ = b.(KeyLocker[T]); s.locker == nil {
			s.cfg.fail("DatabaseKeys: backend %T cannot hold keys in the database", b)
		}
	}
	s.keys.clock = s.cfg.clock
	s.keys.db = s.locker != nil
	s.keys.stall = s.stallInterval
	if s.cfg.seeded {
		s.seedSrc = rand.NewPCG(s.cfg.seed, s.cfg.seed^0x9e3779b97f4a7c15)
	}
	return r
}

// stallInterval is the stall interval of the conflict keys: the adaptive
// controller's, or the floor when it is off.
func (s *shared[T]) stallInterval() time.Duration {
	if a := s.adaptive; a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		return stallAfter(a.avgDur)
	}
	return stallFloor
}

// WithBegin returns a view of r whose transactions begin with opts, built
// by r's backend package (txnpgx.TxOptions, txnsqlite.Deferred, ...). The
// view shares everything else with r: limits, retry budget, contention
// control, random source, and a Run of the view nested in a Run of r (or
// the reverse) joins the outer transaction. opts replace any begin options
// r already had; WithBegin() returns a view with none. The view keeps r's
// Interceptor, if any. A nil r returns nil.
func (r *Runner[T]) WithBegin(opts ...BeginOption[T]) *Runner[T] {
	if r == nil {
		return nil
	}
	v := *r
	v.begin = opts
	return &v
}

// Err returns the configuration error that every Run of r would return, or
// nil if r is usable. Check it at start-up to fail fast.
func (r *Runner[T]) Err() error {
	if r == nil || r.shared == nil {
		return ErrNilRunner
	}
	return r.cfg.err
}

// Run runs fn in a transaction and commits it, retrying as the package
// documentation describes. fn receives a context that carries the
// transaction (for OnCommit, Savepoint and nested Runs) and the transaction
// handle; it must not commit or roll back the handle itself.
//
// Run returns nil after a successful commit. It returns fn's error as it is
// when the error is permanent, and a *GiveUpError when it stopped retrying
// (limits, context, budget, unknown commit outcome); that error wraps the
// last database error. Options apply to this call only.
//
// Called inside the fn of another Run of the same Runner, Run does not start
// a transaction: it runs fn in a savepoint of the outer one (or in the outer
// one itself when the backend has no savepoints) and never retries; errors
// propagate to the outer fn. Such a nested Run accepts any CallOption, so
// that a function that always passes its options can be called both alone
// and inside a bigger Run, but honours none of them: attempts, time limits,
// backoff, Idempotent, Keys and the observer all govern retries and
// admission, which belong to the outermost Run; an invalid option is still
// an error. A context whose transaction has ended (kept past its Run, as
// in an OnCommit callback) carries no transaction: Run on it starts a new
// outermost transaction.
func (r *Runner[T]) Run(ctx context.Context, fn func(ctx context.Context, tx T) error, opts ...CallOption) error {
	if err := r.Err(); err != nil {
		return err
	}
	if fn == nil {
		return ErrNilFunc
	}
	if ctx == nil {
		return ErrNilContext
	}
	if v := ctx.Value(frameKey{}); v != nil {
		f, ok := v.(*frame[T])
		if !ok || f.runner.shared != r.shared {
			return ErrForeignRunner
		}
		if len(opts) > 0 {
			// A nested Run honours none of its options (see Run), but
			// an invalid one is refused as it would be outside.
			var c config
			for _, o := range opts {
				if o != nil {
					o.applyCall(&c)
				}
			}
			if c.err != nil {
				return c.err
			}
		}
		return r.nested(ctx, f, fn)
	}
	cfg := &r.cfg
	if len(opts) > 0 {
		c := r.cfg
		for _, o := range opts {
			if o != nil {
				o.applyCall(&c)
			}
		}
		if c.err != nil {
			return c.err
		}
		cfg = &c
	}
	if err := ctx.Err(); err != nil {
		err = fmt.Errorf("txn: context done before the first attempt: %w", err)
		if cfg.observer != nil {
			cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: cfg.operation, Class: ClassPermanent, Err: err})
		}
		return err
	}
	return r.run(ctx, cfg, fn)
}

// Do is Run for a function that returns a value: it returns fn's result from
// the attempt that committed, or the zero value and Run's error.
func Do[T, R any](ctx context.Context, r *Runner[T], fn func(ctx context.Context, tx T) (R, error), opts ...CallOption) (R, error) {
	var out R
	if fn == nil {
		return out, ErrNilFunc
	}
	err := r.Run(ctx, func(ctx context.Context, tx T) error {
		v, err := fn(ctx, tx)
		if err != nil {
			return err
		}
		out = v
		return nil
	}, opts...)
	if err != nil {
		var zero R
		return zero, err
	}
	return out, nil
}

// runState is one outermost Run's bookkeeping.
type runState struct {
	cfg      *config
	start    time.Time
	attempts int
	// unreached counts the tries that could not reach the database.
	unreached int
	// tries counts attempts plus failed BEGINs: MaxAttempts bounds it.
	tries int
	// noConn is set when the last try could not reach the database.
	noConn bool
	sleeps int
	prev   time.Duration
	rnd    *rand.Rand
	keys   []string // sorted, without duplicates
	// unknown is set once a commit's outcome was unknown and fn was run
	// again (Idempotent): until an attempt commits, Run's outcome is
	// unknown too.
	unknown bool
	// pass is the current attempt's admission, when admitted is set (a
	// value, not a pointer, so that runState stays on the stack); held is
	// set while the attempt holds it.
	pass     pass
	admitted bool
	held     bool
	// boundSpent is set once an attempt of the Run lost its transaction to
	// its probe's lock-wait bound (LockWaitBounder): the Run's later
	// attempts wait for locks as long as they must, so that the bound
	// costs a Run one attempt at most.
	boundSpent bool
	// callbacks are the OnCommit callbacks of the attempt that committed,
	// to run before Run returns. (They are kept here rather than in
	// outcome, which stays small enough to be returned in registers.)
	callbacks []func()
}

// outcome is how one attempt ended.
type outcome struct {
	// err is nil when the attempt committed.
	err error
	// class is err's class as seen from where it happened (a lost
	// connection is retryable before COMMIT, ambiguous during it).
	class Class
	// stop, when not nil, is why Run must stop at once: the commit was sent
	// and its outcome is unknown.
	stop error
	// notBegun is set when BEGIN failed, so fn did not run.
	notBegun bool
	// unreached is set when BEGIN failed because the database could not be
	// reached (a connection failure), not because of contention.
	unreached bool
	// noServer is set when fn's first contact with the database found no
	// server (UnreachableClassifier).
	noServer bool
	// connLost is set when the connection failed before COMMIT: a failure
	// of the database or the network, not of contention.
	connLost bool
}

// run is an outermost Run: it sets up the Run's state, then runs the retry
// loop. Its few returns keep its defers open-coded, off the happy path's
// cost.
func (r *Runner[T]) run(ctx context.Context, cfg *config, fn func(context.Context, T) error) error {
	st := runState{cfg: cfg, start: instant(cfg.clock), keys: sortedKeys(cfg.keys)}
	if cfg.budget != nil {
		cfg.budget.deposit()
	}
	if r.scoper != nil {
		scoped, end, err := r.scoper.StartRun(ctx)
		if err != nil {
			if cfg.observer != nil {
				cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: cfg.operation, Elapsed: st.elapsed(), Class: r.classify(err), Err: err})
			}
			return err
		}
		defer end()
		ctx = scoped
	}
	if r.adaptive != nil || len(st.keys) > 0 {
		st.admitted = true
		// A panic in fn must not keep the attempt's slot or keys.
		defer func() {
			if st.held {
				r.release(&st, endOther)
			}
		}()
	}
	return r.loop(ctx, &st, fn)
}

// loop is the retry loop of an outermost Run: admit, attempt, release, then
// return, or back off and go round again.
func (r *Runner[T]) loop(ctx context.Context, st *runState, fn func(context.Context, T) error) error {
	cfg := st.cfg
	var last error
	for {
		if st.admitted {
			if err := r.admit(ctx, st); err != nil {
				return r.giveUp(ctx, st, ClassRetryable, &GiveUpError{Reason: err, Last: last})
			}
			st.held = true
		}
		st.attempts++
		st.noConn = false // a commit retried in this attempt reached the database
		o := r.attempt(ctx, st, fn)
		st.tries++
		if st.noConn = o.unreached; st.noConn || o.noServer {
			st.unreached++
		} else if cfg.reconnect != nil {
			cfg.reconnect.deposit()
		}
		if o.notBegun {
			st.attempts--
		}
		if st.held {
			st.held = false
			r.release(st, endOf(o))
		}
		last = o.err
		if o.stop != nil {
			return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: o.stop, Ambiguous: true, Last: o.err})
		}
		if o.err == nil {
			if cfg.observer != nil {
				cfg.observer.Committed(ctx, CommitEvent{Operation: cfg.operation, Attempts: st.attempts, Elapsed: st.elapsed()})
			}
			runCallbacks(st.callbacks)
			return nil
		}
		switch o.class {
		case ClassPermanent:
			if st.unknown {
				// An earlier commit may have happened: the caller must
				// learn that before this attempt's error.
				return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: ErrCommitUnknown, Ambiguous: true, Last: o.err})
			}
			if cfg.observer != nil {
				cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: cfg.operation, Attempts: st.attempts, Elapsed: st.elapsed(), Class: o.class, Err: o.err})
			}
			return o.err
		case ClassAmbiguous:
			if !cfg.idempotent {
				return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: ErrCommitUnknown, Ambiguous: true, Last: o.err})
			}
			st.unknown = true
		}
		if o.noServer {
			// Server selection already waited for a server, as long as
			// the driver allows: another try would only wait again.
			return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: ErrUnavailable, Last: o.err})
		}
		if cfg.maxAttempts > 0 && st.tries >= cfg.maxAttempts {
			return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: ErrAttemptsExhausted, Last: o.err})
		}
		if reason := r.backoff(ctx, st, o.class, o.err); reason != nil {
			return r.giveUp(ctx, st, o.class, &GiveUpError{Reason: reason, Last: o.err})
		}
	}
}

// attempt runs one transaction: begin, fn, commit.
func (r *Runner[T]) attempt(ctx context.Context, st *runState, fn func(context.Context, T) error) outcome {
	cfg := st.cfg
	if r.intercept != nil {
		if err := r.intercept.Intercept(ctx, InterceptBegin, st.attempts); err != nil {
			// A forced failure at BEGIN counts as an attempt (its
			// number is the interceptor's plan): report it as one.
			st.started(ctx)
			return outcome{err: err, class: r.beforeCommit(err)}
		}
	}
	tx, unlockDB, err := r.beginTx(ctx, st)
	if err != nil {
		// Nothing was committed: a failed BEGIN is safe to retry whenever
		// the database says so, or the connection broke. fn did not run:
		// this try is no attempt, and the observer hears of none.
		// A BEGIN cut short by the caller's context (a wait for a key
		// held in the database, a connection still being dialled) says
		// nothing of the database: it is not an unreachable one.
		return outcome{err: err, class: r.beforeCommit(err), notBegun: true, unreached: r.connFailure(err) && ctx.Err() == nil}
	}
	st.started(ctx)
	if unlockDB != nil {
		defer unlockDB()
	}
	if st.admitted {
		r.began(st, &st.pass)
	}
	fctx := ctx
	if r.ascoper != nil {
		fctx = r.ascoper.AttemptContext(ctx, tx)
	}
	f := &frame[T]{Context: fctx, runner: r, cfg: cfg, tx: tx, bounded: st.pass.bounded}
	if r.binder != nil {
		f.tx = r.binder.BindHandle(f, tx)
	}
	err = r.call(f, cfg, fn)
	f.mu.Lock()
	f.closed = true
	f.ended.Store(true)
	poison, aborted := f.poison, f.aborted
	f.mu.Unlock()
	if poison != nil {
		// A nested Run or Savepoint saw a retryable error: the transaction
		// is lost (and, on SQL backends, already rolled back), whatever fn
		// returned after it, unless fn insists its error is permanent.
		if c, ok := marked(err); !ok || c != ClassPermanent {
			err = poison
		}
		if !aborted {
			_ = r.rollback(ctx, cfg, tx)
		}
		return outcome{err: err, class: r.attemptClass(st, f, err)}
	}
	if err == nil && r.intercept != nil {
		err = r.intercept.Intercept(ctx, InterceptBeforeCommit, st.attempts)
	}
	if err != nil {
		if rerr := r.rollback(ctx, cfg, tx); errors.Is(rerr, ErrTxDone) {
			// fn committed or rolled back the transaction itself: what it
			// did is final, running it again could only do it twice.
			return outcome{err: &fnFinishedError{fnErr: err, err: rerr}, class: ClassPermanent}
		}
		uc, _ := r.backend.(UnreachableClassifier)
		noServer := uc != nil && uc.Unreachable(err)
		return outcome{err: err, class: r.attemptClass(st, f, err), connLost: noServer || r.connFailure(err), noServer: noServer}
	}
	if cerr := ctx.Err(); cerr != nil {
		return r.abandonCommit(ctx, cfg, tx, cerr)
	}
	if r.intercept != nil {
		if err := r.intercept.Intercept(ctx, InterceptCommit, st.attempts); err != nil {
			r.rollback(ctx, cfg, tx)
			return outcome{err: err, class: r.beforeCommit(err)}
		}
		// The interceptor ran code of its own (a test may end the
		// context there on purpose): look again.
		if cerr := ctx.Err(); cerr != nil {
			return r.abandonCommit(ctx, cfg, tx, cerr)
		}
	}
	var o outcome
	if err := r.backend.Commit(ctx, tx); err != nil {
		o = r.commitFailed(ctx, st, tx, err)
	}
	if o.err == nil && r.intercept != nil {
		if err := r.intercept.Intercept(ctx, InterceptAfterCommit, st.attempts); err != nil {
			return outcome{err: err, class: ClassAmbiguous}
		}
	}
	if o.err == nil {
		st.callbacks = f.callbacks
	}
	return o
}

// abandonCommit rolls tx back instead of committing it, because ctx ended
// (with cerr) before COMMIT was sent: the caller has gone, so work it can
// no longer learn the outcome of is not committed. The rollback is bounded
// by the rollback timeout.
func (r *Runner[T]) abandonCommit(ctx context.Context, cfg *config, tx T, cerr error) outcome {
	rerr := r.rollback(ctx, cfg, tx)
	switch {
	case errors.Is(rerr, ErrTxDone):
		return outcome{err: &fnFinishedError{err: rerr}, class: ClassPermanent}
	case rerr != nil:
		// Not committed all the same: COMMIT was never sent.
		return outcome{err: fmt.Errorf("txn: context done before commit, transaction not committed (its rollback: %v): %w", rerr, cerr), class: ClassPermanent}
	}
	return outcome{err: fmt.Errorf("txn: context done before commit, transaction rolled back: %w", cerr), class: ClassPermanent}
}

// commitFailed handles the error err of tx's first COMMIT: it sends the
// commit again, after a backoff, for as long as it fails with a
// commit-retryable error and the limits allow. The attempt holds its
// admission slot and keys while it does. (The first COMMIT is sent by
// attempt itself, so that a commit that succeeds at once costs no call.)
func (r *Runner[T]) commitFailed(ctx context.Context, st *runState, tx T, err error) outcome {
	cfg := st.cfg
	if errors.Is(err, ErrTxDone) {
		// Backends report ErrTxDone only for a transaction ended before
		// Run's commit: by fn, whatever the context did.
		return outcome{err: &fnFinishedError{err: err}, class: ClassPermanent}
	}
	for sent := 1; ; sent++ {
		cls := r.classify(err)
		switch cls {
		case ClassConnLost:
			return outcome{err: err, class: ClassAmbiguous}
		case ClassCommitRetryable:
			if cfg.maxAttempts > 0 && sent >= cfg.maxAttempts {
				return outcome{err: err, class: cls, stop: errCommitAttempts}
			}
			if reason := r.backoff(ctx, st, cls, err); reason != nil {
				return outcome{err: err, class: cls, stop: reason}
			}
		default:
			return outcome{err: err, class: cls}
		}
		if err = r.backend.Commit(ctx, tx); err == nil {
			return outcome{}
		}
	}
}

// attemptClass classifies err, which ended the attempt of st whose
// outermost frame is f before COMMIT was sent.
func (r *Runner[T]) attemptClass(st *runState, f *frame[T], err error) Class {
	cls := r.beforeCommit(err)
	if cls == ClassPermanent && r.boundExpired(f, err) {
		st.boundSpent = true
		return ClassRetryable
	}
	return cls
}

// boundExpired reports whether err, seen in the transaction of frame f (or
// of a savepoint in it), is the expiry of the lock-wait bound the Runner
// gave the transaction as a probe of the adaptive limit (see
// LockWaitBounder): the Runner then counts it as a conflict, which loses
// the transaction. An error fn marked with Permanent, or one that carries
// another Run's unknown commit, keeps its class.
func (r *Runner[T]) boundExpired(f *frame[T], err error) bool {
	for f.parent != nil {
		f = f.parent
	}
	if !f.bounded {
		return false
	}
	if _, ok := marked(err); ok || errchain.Is(err, ErrCommitUnknown) {
		return false
	}
	return f.runner.bounder.LockWaitExpired(err)
}

// losesTx reports whether err, returned by the fn of a level nested in
// frame f's transaction, loses the whole transaction: a retryable error,
// or the expiry of a probe's lock-wait bound, which a savepoint must not
// turn into a permanent error fn could swallow and commit without the
// statement that waited.
func (r *Runner[T]) losesTx(f *frame[T], err error) bool {
	return r.classify(err) != ClassPermanent || r.boundExpired(f, err)
}

// beforeCommit classifies an error seen before COMMIT was sent, where
// nothing can have been committed: whatever may or may not have happened to
// a statement is undone with the transaction.
func (r *Runner[T]) beforeCommit(err error) Class {
	if _, ok := marked(err); !ok && errchain.Is(err, ErrCommitUnknown) {
		// fn's error carries a commit whose outcome is unknown: another
		// Run's, which fn ran on a context of its own. Running fn again
		// could apply that Run's writes twice, whatever the cause below.
		return ClassPermanent
	}
	switch c := r.classify(err); c {
	case ClassConnLost, ClassCommitRetryable, ClassAmbiguous:
		return ClassRetryable
	default:
		return c
	}
}

// connFailure reports whether err is a failure of the connection (lost,
// or refused before anything was sent) rather than of the transaction.
func (r *Runner[T]) connFailure(err error) bool {
	if cc, ok := r.backend.(ConnClassifier); ok && cc.ClassifyConn(err) != ClassPermanent {
		return true
	}
	return r.classify(err) == ClassConnLost
}

// classify applies fn's Retry/Permanent marks, then the Runner's classifier
// (WithClassifier) completed by the backend's connection check, or else the
// backend's own table.
func (r *Runner[T]) classify(err error) Class {
	if c, ok := marked(err); ok {
		return c
	}
	if r.cfg.classifier == nil {
		return r.backend.Classify(err)
	}
	if c := r.cfg.classifier(err); c != ClassPermanent {
		return c
	}
	if cc, ok := r.backend.(ConnClassifier); ok {
		return cc.ClassifyConn(err)
	}
	return ClassPermanent
}

// runCallbacks runs the OnCommit callbacks of a committed transaction, in
// order. One that panics (or exits its goroutine) does not keep the later
// ones from running: they run as the panic unwinds, which then goes on to
// Run's caller.
func runCallbacks(cbs []func()) {
	if len(cbs) == 0 {
		return
	}
	defer runCallbacks(cbs[1:])
	cbs[0]()
}

// call runs fn, rolling the transaction back if fn panics (the panic then
// continues unchanged) or exits its goroutine.
func (r *Runner[T]) call(f *frame[T], cfg *config, fn func(context.Context, T) error) error {
	returned := false
	defer func() {
		if !returned {
			// The transaction ends here: a context fn handed on (to a
			// goroutine, a recovery handler) must no longer carry it.
			f.close()
			f.mu.Lock()
			aborted := f.aborted
			f.mu.Unlock()
			if !aborted {
				// (A nested level's retryable error has rolled it back
				// already otherwise.)
				_ = r.rollback(f.Context, cfg, f.tx)
			}
		}
	}()
	err := fn(f, f.tx)
	returned = true
	return err
}

// rollback rolls tx back on a context that survives the caller's
// cancellation, bounded by the rollback timeout, and returns the backend's
// error (one wrapping ErrTxDone says the transaction had already ended).
func (r *Runner[T]) rollback(ctx context.Context, cfg *config, tx T) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.rollbackTimeout)
	defer cancel()
	return r.backend.Rollback(rctx, tx)
}

// backoff decides whether another try may start and sleeps until it may. It
// returns nil to go on, or the reason to stop.
func (r *Runner[T]) backoff(ctx context.Context, st *runState, cls Class, err error) error {
	cfg := st.cfg
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if st.rnd == nil {
		st.rnd = r.newRand()
	}
	st.sleeps++
	d := cfg.backoff.Delay(st.sleeps, st.prev, st.rnd)
	if d < 0 {
		d = 0
	}
	st.prev = d
	now := cfg.clock.Now()
	wake := now.Add(d)
	if dl, ok := ctx.Deadline(); ok && !wake.Before(dl) {
		return context.DeadlineExceeded
	}
	if cfg.maxElapsed > 0 && wake.Sub(st.start) >= cfg.maxElapsed {
		return ErrElapsedExhausted
	}
	if st.noConn && cfg.reconnect != nil && !cfg.reconnect.withdraw(now) {
		return ErrUnavailable
	}
	if cfg.budget != nil && !cfg.budget.withdraw(now) {
		return ErrBudgetExhausted
	}
	if cfg.observer != nil {
		cfg.observer.RetryScheduled(ctx, RetryEvent{Operation: cfg.operation, Attempt: st.attempts, Class: cls, Delay: d, Err: err})
	}
	return cfg.clock.Sleep(ctx, d)
}

// giveUp completes e with the attempts and elapsed time, reports it to the
// observer, and returns it as the error of Run.
func (r *Runner[T]) giveUp(ctx context.Context, st *runState, cls Class, e *GiveUpError) error {
	e.Attempts, e.Unreachable, e.Elapsed = st.attempts, st.unreached, st.elapsed()
	e.Ambiguous = e.Ambiguous || st.unknown
	if st.cfg.observer != nil {
		st.cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: st.cfg.operation, Attempts: st.attempts, Elapsed: e.Elapsed, Class: cls, Err: e})
	}
	return e
}

// started reports the attempt st.attempts to the observer: its
// transaction has begun and fn is about to run. A try whose BEGIN failed is
// not reported, as it is not counted: the observer's attempts are the
// runs of fn that GiveUpEvent and CommitEvent count.
func (st *runState) started(ctx context.Context) {
	if cfg := st.cfg; cfg.observer != nil {
		cfg.observer.AttemptStarted(ctx, AttemptEvent{Operation: cfg.operation, Attempt: st.attempts, Key: st.firstKey()})
	}
}

func (st *runState) firstKey() string {
	if len(st.keys) == 0 {
		return ""
	}
	return st.keys[0]
}

func (st *runState) elapsed() time.Duration {
	return st.cfg.clock.Now().Sub(st.start)
}

// errCommitAttempts is the reason Run gives when a commit-retryable commit
// kept failing until the attempt limit.
var errCommitAttempts = fmt.Errorf("%w for the commit", ErrAttemptsExhausted)

// newRand returns the random source of one Run.
func (r *Runner[T]) newRand() *rand.Rand {
	if r.seedSrc != nil {
		r.seedMu.Lock()
		a, b := r.seedSrc.Uint64(), r.seedSrc.Uint64()
		r.seedMu.Unlock()
		return rand.New(rand.NewPCG(a, b))
	}
	return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
}
