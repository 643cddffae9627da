package txntest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/txnkit/txn"
)

// CheckOption configures CheckRerun, CheckCall, Rerun and RerunCall.
type CheckOption func(*checkConfig)

type checkConfig struct {
	retries   int
	points    []txn.InterceptPoint
	reset     func(context.Context) error
	meanwhile func(context.Context) error
	err       error
}

// Retries sets the largest number of forced retries: the check runs the
// call with 1, 2, ... k forced retries and stops at the first that changes
// the report. The default is 2. k must be at least 1.
func Retries(k int) CheckOption {
	return func(c *checkConfig) {
		if k < 1 {
			c.err = fmt.Errorf("txntest: Retries(%d): need at least one retry", k)
			return
		}
		c.retries = k
	}
}

// At sets the points where the forced failures happen; each point is
// checked in turn. The default is txn.InterceptBeforeCommit, after fn's
// statements ran, so that the database really rolls them back. With
// txn.InterceptAfterCommit the failed attempts really commit and Run is
// told the outcome is unknown: use it on Idempotent calls, to check that
// running them twice has the effect of running them once.
func At(points ...txn.InterceptPoint) CheckOption {
	return func(c *checkConfig) {
		if len(points) == 0 {
			c.err = errors.New("txntest: At(): no point given")
			return
		}
		c.points = points
	}
}

// Reset sets a function that restores the state the call starts from
// (database rows, fakes of outside services, captured variables); the
// check calls it before every run of the call, the first included. An
// error from it ends the check.
func Reset(f func(ctx context.Context) error) CheckOption {
	return func(c *checkConfig) { c.reset = f }
}

// Meanwhile sets the work of another transaction, the one whose conflict
// made the retry happen: in runs with forced retries the check runs it
// once, after the first forced failure and before the retry begins (on
// another connection, as a separate transaction); in the run without
// faults it runs it before the call. A correct call gives the same report
// either way, since the database serialises the two transactions in that
// order; a call that reuses a value read outside its transaction, or in
// an earlier attempt, does not. f must not use the Runner under check (its
// attempt holds that Runner's admission slot while f runs): use the
// database handle, or another Runner. An error from f ends the check.
func Meanwhile(f func(ctx context.Context) error) CheckOption {
	return func(c *checkConfig) { c.meanwhile = f }
}

// CheckRerun checks that fn is safe to run again: it runs fn through r
// once without faults and records what report returns, then runs it again
// with 1, 2, ... forced retries (see Retries and At) and fails t, naming
// the faulted attempts and both reports, at the first run whose report
// differs (compared with reflect.DeepEqual), or when a run returns an
// error. report describes the effects that matter: rows read back from the
// database, calls recorded by fakes of outside services, fn's result; it
// must return values that later runs do not modify (copies): the check
// fails when the value of the run without faults has changed by the time
// it is compared (as far as its %#v text shows: the contents of maps,
// slices and a top-level pointer, not of pointers nested deeper). Use
// Reset to start every run from the same state.
//
// The forced failures are injected through r.WithInterceptor, so the
// Runner, its backend and its database are the ones the application uses.
func CheckRerun[T, S any](t testing.TB, r *txn.Runner[T], fn func(ctx context.Context, tx T) error, report func(ctx context.Context) S, opts ...CheckOption) {
	t.Helper()
	if err := Rerun(t.Context(), r, fn, report, opts...); err != nil {
		t.Fatal(err)
	}
}

// CheckCall is CheckRerun for code that calls Run itself, such as a
// service method: call gets the Runner to use (a faulty view of r) and
// must pass it to the code under test, so that the code around Run (what
// it reads before, what it does with the result) is checked too. Every
// Run the call makes gets the forced retries.
func CheckCall[T, S any](t testing.TB, r *txn.Runner[T], call func(ctx context.Context, r *txn.Runner[T]) error, report func(ctx context.Context) S, opts ...CheckOption) {
	t.Helper()
	if err := RerunCall(t.Context(), r, call, report, opts...); err != nil {
		t.Fatal(err)
	}
}

// Rerun is CheckRerun without a testing.TB: it returns nil when fn passed
// the check, and an error saying what differed, or what failed, otherwise.
func Rerun[T, S any](ctx context.Context, r *txn.Runner[T], fn func(ctx context.Context, tx T) error, report func(ctx context.Context) S, opts ...CheckOption) error {
	if fn == nil {
		return fmt.Errorf("txntest: %w", txn.ErrNilFunc)
	}
	return RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[T]) error { return r.Run(ctx, fn) }, report, opts...)
}

// RerunCall is CheckCall without a testing.TB: it returns nil when the
// call passed the check, and an error saying what differed, or what
// failed, otherwise.
func RerunCall[T, S any](ctx context.Context, r *txn.Runner[T], call func(ctx context.Context, r *txn.Runner[T]) error, report func(ctx context.Context) S, opts ...CheckOption) error {
	cfg := checkConfig{retries: 2, points: []txn.InterceptPoint{txn.InterceptBeforeCommit}}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	switch {
	case cfg.err != nil:
		return cfg.err
	case r == nil:
		return fmt.Errorf("txntest: %w", txn.ErrNilRunner)
	case call == nil || report == nil:
		return fmt.Errorf("txntest: nil call or report: %w", txn.ErrNilFunc)
	}

	// The run without faults, through an interceptor that only counts, so
	// that a call that bypasses the Runner it is given is caught.
	if err := cfg.doReset(ctx); err != nil {
		return err
	}
	if cfg.meanwhile != nil {
		if err := cfg.meanwhile(ctx); err != nil {
			return fmt.Errorf("txntest: Meanwhile, before the run without faults: %w", err)
		}
	}
	counter := Fail(txn.InterceptBegin)
	if err := call(ctx, r.WithInterceptor(counter)); err != nil {
		return fmt.Errorf("txntest: the call failed without any fault: %w", err)
	}
	if counter.Attempts() == 0 {
		return errors.New("txntest: the call ran no transaction through the Runner it was given; pass that Runner to the code under test")
	}
	want := report(ctx)
	// A report that returns the memory of a fake (a pointer, a map that
	// Reset clears) rather than a copy would compare equal to itself
	// after every run: keep its text, to tell when a later run changed it.
	wantText := fmt.Sprintf("%#v", want)

	for _, p := range cfg.points {
		for j := 1; j <= cfg.retries; j++ {
			if err := cfg.doReset(ctx); err != nil {
				return err
			}
			attempts := make([]int, j)
			for i := range attempts {
				attempts[i] = i + 1
			}
			ic := &checkInterceptor{faults: Fail(p, attempts...), ctx: ctx, meanwhile: cfg.meanwhile}
			err := call(ctx, r.WithInterceptor(ic))
			if err != nil {
				hint := ""
				if errors.Is(err, txn.ErrCommitUnknown) && p == txn.InterceptAfterCommit {
					hint = " (an unknown commit outcome re-runs fn only for a call made with txn.Idempotent())"
				}
				return fmt.Errorf("txntest: the call returned an error once %s%s: %w", ic.faultsText(p, j), hint, err)
			}
			if n := len(ic.faults.Injected()); n < j {
				return fmt.Errorf("txntest: %d forced failures were planned at %v but the call's Runs made only %d; "+
					"does the call ignore an error of Run, or does the Runner's attempt limit stop it?", j, p, n)
			}
			got := report(ctx)
			if now := fmt.Sprintf("%#v", want); now != wantText {
				return fmt.Errorf("txntest: report must return copies: what it returned after the run without faults, %s, "+
					"reads %s after %s, so comparing it with later reports proves nothing; "+
					"return copies of the slices, maps and structs that fn or the fakes modify", wantText, now, ic.describe(p, j))
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("txntest: not safe to re-run: after %s, report returned %+v; after a single attempt it returned %+v",
					ic.describe(p, j), got, want)
			}
		}
	}
	return nil
}

func (c *checkConfig) doReset(ctx context.Context) error {
	if c.reset == nil {
		return nil
	}
	if err := c.reset(ctx); err != nil {
		return fmt.Errorf("txntest: Reset: %w", err)
	}
	return nil
}

// checkInterceptor injects the faults of one run of a check and runs the
// Meanwhile transaction after the first of them.
type checkInterceptor struct {
	faults    *Faults
	ctx       context.Context
	meanwhile func(context.Context) error

	mu      sync.Mutex
	pending bool
	ran     bool
	runs    int
}

func (c *checkInterceptor) Intercept(ctx context.Context, at txn.InterceptPoint, attempt int) error {
	if at == txn.InterceptBegin {
		c.mu.Lock()
		if attempt == 1 {
			c.runs++
		}
		run := c.pending
		c.pending = false
		c.mu.Unlock()
		if run {
			if err := c.meanwhile(c.ctx); err != nil {
				return txn.Permanent(fmt.Errorf("txntest: Meanwhile, after the first forced failure: %w", err))
			}
		}
	}
	err := c.faults.Intercept(ctx, at, attempt)
	if err != nil && c.meanwhile != nil {
		c.mu.Lock()
		if !c.ran {
			c.ran, c.pending = true, true
		}
		c.mu.Unlock()
	}
	return err
}

// faultsText says what j forced failures at p did, as "attempt 1 failed
// before COMMIT".
func (c *checkInterceptor) faultsText(p txn.InterceptPoint, j int) string {
	switch j {
	case 1:
		return "attempt 1 " + outcomeAt(p)
	case 2:
		return "attempts 1 and 2 each " + outcomeAt(p)
	}
	return "attempts 1 to " + strconv.Itoa(j) + " each " + outcomeAt(p)
}

// describe says what the faults of a run with j forced failures at p did,
// as "attempt 1 failed before COMMIT and attempt 2 committed".
func (c *checkInterceptor) describe(p txn.InterceptPoint, j int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.faultsText(p, j)
	if c.ran {
		s += ", another transaction (Meanwhile) committed,"
	}
	s += " and attempt " + strconv.Itoa(j+1) + " committed"
	if c.runs > 1 {
		s += " (in each of the call's " + strconv.Itoa(c.runs) + " Runs)"
	}
	return s
}
