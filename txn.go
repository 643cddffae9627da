// Package txn runs a function inside a database transaction and runs it again,
// in a fresh transaction, when the database reports that the transaction lost
// a race: a serialization failure, a deadlock, a write conflict, a busy
// database.
//
// A Runner is built once over a database handle by a backend package
// (txnsql, txnpgx, txnmysql, txnmongo, txnsqlite) and shared by all
// goroutines:
//
//	r := txnpgx.New(pool)
//	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
//		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amt, from)
//		return err
//	})
//
// Run begins a transaction, calls fn, and commits. When anything fails it
// rolls the transaction back first, then classifies the error: permanent
// errors are returned as they are; retryable ones (the database rolled the
// transaction back) make Run sleep for a jittered, capped exponential backoff
// and run fn again in a new transaction; commit-retryable ones (MongoDB's
// UnknownTransactionCommitResult) re-send only the commit; an ambiguous one
// (the connection died while COMMIT was in flight) is never retried unless the
// call is Idempotent, and is returned as an error matching ErrCommitUnknown.
//
// A Run nested in fn on the same Runner joins the outer transaction through a
// savepoint (or outright, on backends without savepoints); only the outermost
// Run retries. OnCommit registers work to do once the outermost commit has
// succeeded.
//
// Under contention, each Runner limits how many of its attempts run at once
// with an adaptive limit that shrinks when attempts conflict and opens again
// when they commit (on by default; see Adaptive), and calls can name
// conflict keys so that those touching the same rows take turns inside the
// process (Keys). Observers (SlogObserver, and the txnotel module for
// OpenTelemetry) see every attempt, retry, give-up, commit and wait.
package txn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Backend adapts one database driver to the Runner. T is the transaction
// handle fn receives (pgx.Tx, *sql.Tx, a MongoDB session, ...). Backend
// packages implement it; users rarely need to.
type Backend[T any] interface {
	// Begin starts a transaction. opts is what WithBeginOptions set, or nil.
	Begin(ctx context.Context, opts any) (T, error)
	// Commit commits tx. If tx was already finished it returns an error
	// wrapping ErrTxDone. After Commit returns, Run never calls Rollback on
	// tx, whatever the result.
	Commit(ctx context.Context, tx T) error
	// Rollback rolls tx back. Run calls it with a context detached from the
	// caller's cancellation and bounded by RollbackTimeout.
	Rollback(ctx context.Context, tx T) error
	// Classify maps an error from Begin, fn or Commit to a Class.
	Classify(err error) Class
}

// RunScoper is implemented by backends that keep state across all attempts
// of one outermost Run, such as a MongoDB session. StartRun is called once,
// before the first attempt; the context it returns replaces the caller's for
// Begin, fn, Commit and Rollback of every attempt, and end is called once
// when Run returns, whatever the outcome. An error from StartRun is returned
// as it is.
type RunScoper interface {
	StartRun(ctx context.Context) (scoped context.Context, end func(), err error)
}

// Runner runs functions in transactions of one database and retries them.
// Build it with a backend's constructor (or New) and share it: it is safe
// for concurrent use, and its retry budget is shared by all its callers.
type Runner[T any] struct {
	backend Backend[T]
	sp      Savepointer[T]
	scoper  RunScoper
	cfg     config

	adaptive *adaptive
	keys     keyTable

	seedMu  sync.Mutex
	seedSrc *rand.PCG
}

// New returns a Runner over backend b, configured by opts. An invalid
// option, or a nil backend, does not panic: the Runner's Err reports it and
// every Run returns it.
func New[T any](b Backend[T], opts ...Option) *Runner[T] {
	r := &Runner[T]{backend: b, cfg: defaultConfig()}
	if b == nil {
		r.cfg.err = ErrNilRunner
		return r
	}
	r.sp, _ = b.(Savepointer[T])
	r.scoper, _ = b.(RunScoper)
	for _, o := range opts {
		if o != nil {
			o(&r.cfg)
		}
	}
	if r.cfg.adaptiveMax > 0 {
		r.adaptive = newAdaptive(r.cfg.adaptiveMax)
	}
	if r.cfg.seeded {
		r.seedSrc = rand.NewPCG(r.cfg.seed, r.cfg.seed^0x9e3779b97f4a7c15)
	}
	return r
}

// Err returns the configuration error that every Run of r would return, or
// nil if r is usable. Check it at start-up to fail fast.
func (r *Runner[T]) Err() error {
	if r == nil {
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
// last database error. Options apply to this call only; Runner-only options
// are rejected.
//
// Called inside the fn of another Run of the same Runner, Run does not start
// a transaction: it runs fn in a savepoint of the outer one (or in the outer
// one itself when the backend has no savepoints) and never retries; errors
// propagate to the outer fn.
func (r *Runner[T]) Run(ctx context.Context, fn func(ctx context.Context, tx T) error, opts ...Option) error {
	if r == nil || r.backend == nil {
		return ErrNilRunner
	}
	if r.cfg.err != nil {
		return r.cfg.err
	}
	if fn == nil {
		return ErrNilFunc
	}
	if ctx == nil {
		return ErrNilContext
	}
	if v := ctx.Value(frameKey{}); v != nil {
		f, ok := v.(*frame[T])
		if !ok || f.runner != r {
			return ErrForeignRunner
		}
		if len(opts) > 0 {
			return fmt.Errorf("%w: a nested Run joins the outer transaction and takes no options", ErrBadOption)
		}
		return r.nested(ctx, f, fn)
	}
	cfg := &r.cfg
	if len(opts) > 0 {
		c := r.cfg
		c.perCall = true
		for _, o := range opts {
			if o != nil {
				o(&c)
			}
		}
		if c.err != nil {
			return c.err
		}
		cfg = &c
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("txn: context done before the first attempt: %w", err)
	}
	return r.run(ctx, cfg, fn)
}

// Do is Run for a function that returns a value: it returns fn's result from
// the attempt that committed, or the zero value and Run's error.
func Do[T, R any](ctx context.Context, r *Runner[T], fn func(ctx context.Context, tx T) (R, error), opts ...Option) (R, error) {
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
	sleeps   int
	prev     time.Duration
	rnd      *rand.Rand
	keys     []string // sorted, without duplicates
}

// run is the retry loop of an outermost Run.
func (r *Runner[T]) run(ctx context.Context, cfg *config, fn func(context.Context, T) error) error {
	st := runState{cfg: cfg, start: cfg.clock.Now(), keys: sortedKeys(cfg.keys)}
	if cfg.budget != nil {
		cfg.budget.deposit()
	}
	if r.scoper != nil {
		scoped, end, err := r.scoper.StartRun(ctx)
		if err != nil {
			return err
		}
		defer end()
		ctx = scoped
	}
	admission := r.adaptive != nil || len(st.keys) > 0
	var (
		held bool
		tk   ticket
		last error
	)
	if admission {
		// A panic in fn must not keep the attempt's slot or keys.
		defer func() {
			if held {
				r.release(&st, tk, ClassPermanent, errPanicked)
			}
		}()
	}
	for {
		if admission {
			var err error
			if tk, err = r.admit(ctx, &st); err != nil {
				return r.giveUp(ctx, &st, err, ClassRetryable, last, false)
			}
			held = true
		}
		st.attempts++
		if cfg.observer != nil {
			cfg.observer.AttemptStarted(ctx, AttemptEvent{Operation: cfg.operation, Attempt: st.attempts, Key: st.firstKey()})
		}
		callbacks, err, cls, reason := r.attempt(ctx, &st, fn)
		if held {
			held = false
			r.release(&st, tk, cls, err)
		}
		last = err
		if reason != nil {
			return r.giveUp(ctx, &st, reason, cls, err, true)
		}
		if err == nil {
			if cfg.observer != nil {
				cfg.observer.Committed(ctx, CommitEvent{Operation: cfg.operation, Attempts: st.attempts, Elapsed: st.elapsed()})
			}
			for _, cb := range callbacks {
				cb()
			}
			return nil
		}
		switch cls {
		case ClassPermanent:
			if cfg.observer != nil {
				cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: cfg.operation, Attempts: st.attempts, Elapsed: st.elapsed(), Class: cls, Err: err})
			}
			return err
		case ClassAmbiguous:
			if !cfg.idempotent {
				return r.giveUp(ctx, &st, ErrCommitUnknown, cls, err, true)
			}
		}
		if cfg.maxAttempts > 0 && st.attempts >= cfg.maxAttempts {
			return r.giveUp(ctx, &st, ErrAttemptsExhausted, cls, err, false)
		}
		if reason := r.backoff(ctx, &st, cls, err); reason != nil {
			return r.giveUp(ctx, &st, reason, cls, err, false)
		}
	}
}

// attempt runs one transaction: begin, fn, commit (re-sending a
// commit-retryable commit). It returns the OnCommit callbacks on success, or
// the error and its class as seen from where it happened. A non-nil reason
// means Run must stop now with an unknown commit outcome.
func (r *Runner[T]) attempt(ctx context.Context, st *runState, fn func(context.Context, T) error) (callbacks []func(), err error, cls Class, reason error) {
	cfg := st.cfg
	tx, err := r.backend.Begin(ctx, cfg.beginOptions)
	if err != nil {
		// Nothing was committed: a failed BEGIN is safe to retry whenever
		// the database says so, or the connection broke.
		return nil, err, r.beforeCommit(err), nil
	}
	f := &frame[T]{Context: ctx, runner: r, cfg: cfg, tx: tx}
	err = r.call(f, cfg, fn)
	f.mu.Lock()
	f.closed = true
	poison := f.poison
	f.mu.Unlock()
	if err == nil && poison != nil {
		// A nested Run or Savepoint saw a retryable error that fn then
		// swallowed: the transaction is already lost, committing it could
		// only commit half of fn's work.
		err = poison
	}
	if err != nil {
		r.rollback(ctx, cfg, tx)
		return nil, err, r.beforeCommit(err), nil
	}
	if cerr := ctx.Err(); cerr != nil {
		// The caller has gone: do not commit work it can no longer learn
		// the outcome of.
		r.rollback(ctx, cfg, tx)
		return nil, fmt.Errorf("txn: context done before commit: %w", cerr), ClassPermanent, nil
	}
	for commits := 1; ; commits++ {
		err = r.backend.Commit(ctx, tx)
		if err == nil {
			return f.callbacks, nil, ClassPermanent, nil
		}
		if ctx.Err() == nil && errors.Is(err, ErrTxDone) {
			return nil, fmt.Errorf("%w: %w", ErrFnFinishedTx, err), ClassPermanent, nil
		}
		cls = r.classify(err)
		switch cls {
		case ClassConnLost:
			return nil, err, ClassAmbiguous, nil
		case ClassCommitRetryable:
			if cfg.maxAttempts > 0 && commits >= cfg.maxAttempts {
				return nil, err, cls, errCommitAttempts
			}
			if reason := r.backoff(ctx, st, cls, err); reason != nil {
				return nil, err, cls, reason
			}
			continue
		}
		return nil, err, cls, nil
	}
}

// beforeCommit classifies an error seen before COMMIT was sent, where
// nothing can have been committed: whatever may or may not have happened to
// a statement is undone with the transaction.
func (r *Runner[T]) beforeCommit(err error) Class {
	switch c := r.classify(err); c {
	case ClassConnLost, ClassCommitRetryable, ClassAmbiguous:
		return ClassRetryable
	default:
		return c
	}
}

// classify applies fn's Retry/Permanent marks, then the backend's table.
func (r *Runner[T]) classify(err error) Class {
	if c, ok := marked(err); ok {
		return c
	}
	return r.backend.Classify(err)
}

// call runs fn, rolling the transaction back if fn panics (the panic then
// continues unchanged) or exits its goroutine.
func (r *Runner[T]) call(f *frame[T], cfg *config, fn func(context.Context, T) error) error {
	returned := false
	defer func() {
		if !returned {
			r.rollback(f.Context, cfg, f.tx)
		}
	}()
	err := fn(f, f.tx)
	returned = true
	return err
}

// rollback rolls tx back on a context that survives the caller's
// cancellation, bounded by the rollback timeout.
func (r *Runner[T]) rollback(ctx context.Context, cfg *config, tx T) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.rollbackTimeout)
	defer cancel()
	_ = r.backend.Rollback(rctx, tx)
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
	if cfg.budget != nil && !cfg.budget.withdraw(now) {
		return ErrBudgetExhausted
	}
	if cfg.observer != nil {
		cfg.observer.RetryScheduled(ctx, RetryEvent{Operation: cfg.operation, Attempt: st.attempts, Class: cls, Delay: d, Err: err})
	}
	return cfg.clock.Sleep(ctx, d)
}

// giveUp builds the error Run returns when it stops retrying.
func (r *Runner[T]) giveUp(ctx context.Context, st *runState, reason error, cls Class, last error, ambiguous bool) error {
	e := &GiveUpError{Reason: reason, Ambiguous: ambiguous, Attempts: st.attempts, Elapsed: st.elapsed(), Last: last}
	if st.cfg.observer != nil {
		st.cfg.observer.GaveUp(ctx, GiveUpEvent{Operation: st.cfg.operation, Attempts: st.attempts, Elapsed: e.Elapsed, Class: cls, Err: e})
	}
	return e
}

func (st *runState) firstKey() string {
	if len(st.keys) == 0 {
		return ""
	}
	return st.keys[0]
}

// errCommitAttempts is the reason Run gives when a commit-retryable commit
// kept failing until the attempt limit.
var errCommitAttempts = fmt.Errorf("%w for the commit", ErrAttemptsExhausted)

// errPanicked stands for the outcome of an attempt whose fn panicked.
var errPanicked = errors.New("txn: fn panicked")

func (st *runState) elapsed() time.Duration {
	return st.cfg.clock.Now().Sub(st.start)
}

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

// frameKey is the context key under which a frame stores itself.
type frameKey struct{}

// txFrame is what the non-generic helpers (OnCommit, Savepoint) need of a
// frame.
type txFrame interface {
	onCommit(cb func()) error
	savepoint(ctx context.Context, fn func(context.Context) error) error
}

// frame is one transaction or savepoint level. It is itself the context fn
// receives, so that carrying the transaction costs one allocation.
type frame[T any] struct {
	context.Context
	runner *Runner[T]
	cfg    *config // the outermost Run's
	tx     T
	parent *frame[T]
	depth  int

	mu        sync.Mutex
	callbacks []func()
	poison    error // a retryable error seen below this level
	closed    bool
}

// Value returns the innermost frame for frameKey and defers to the parent
// context for every other key.
func (f *frame[T]) Value(key any) any {
	if key == any(frameKey{}) {
		return f
	}
	return f.Context.Value(key)
}

func (f *frame[T]) onCommit(cb func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("%w: OnCommit after the transaction or savepoint ended", ErrNoTransaction)
	}
	f.callbacks = append(f.callbacks, cb)
	return nil
}

// root returns the outermost frame.
func (f *frame[T]) root() *frame[T] {
	for f.parent != nil {
		f = f.parent
	}
	return f
}

// markPoisoned records on the outermost frame that a retryable error was
// seen inside, so that Run does not commit if fn swallows it.
func (f *frame[T]) markPoisoned(err error) {
	root := f.root()
	root.mu.Lock()
	if root.poison == nil {
		root.poison = err
	}
	root.mu.Unlock()
}

// OnCommit registers cb to run once, after the outermost transaction carried
// by ctx commits. Callbacks run in registration order on the goroutine that
// called Run, before Run returns. Callbacks registered in an attempt that
// did not commit, or in a savepoint that was rolled back, never run. It
// returns ErrNoTransaction if ctx carries no transaction (or it has ended)
// and ErrNilFunc for a nil cb.
func OnCommit(ctx context.Context, cb func()) error {
	if cb == nil {
		return ErrNilFunc
	}
	f, err := frameOf(ctx)
	if err != nil {
		return err
	}
	return f.onCommit(cb)
}

// TxFrom returns the innermost transaction handle of type T carried by ctx.
// It lets code deep in a call chain join the transaction of its caller.
func TxFrom[T any](ctx context.Context) (T, bool) {
	if ctx != nil {
		if f, ok := ctx.Value(frameKey{}).(*frame[T]); ok {
			return f.tx, true
		}
	}
	var zero T
	return zero, false
}

func frameOf(ctx context.Context) (txFrame, error) {
	if ctx == nil {
		return nil, ErrNilContext
	}
	f, ok := ctx.Value(frameKey{}).(txFrame)
	if !ok {
		return nil, ErrNoTransaction
	}
	return f, nil
}
