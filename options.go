package txn

import (
	"fmt"
	"math"
	"time"
)

// Option configures a Runner (passed to New or a backend's constructor) or a
// single call (passed to Run or Do). Options marked "Runner only" are
// rejected, with an error matching ErrBadOption, when passed to a call.
type Option func(*config)

// config is what options set. A Runner holds one; a call with options works
// on a copy.
type config struct {
	maxAttempts     int
	maxElapsed      time.Duration
	backoff         Backoff
	observer        Observer
	clock           Clock
	rollbackTimeout time.Duration
	idempotent      bool
	beginOptions    any
	keys            []string
	operation       string

	// Runner only.
	budget      *budget
	seed        uint64
	seeded      bool
	adaptiveMax int

	perCall bool
	err     error
}

func defaultConfig() config {
	return config{
		maxAttempts:     DefaultMaxAttempts,
		backoff:         FullJitter(DefaultBackoffBase, DefaultBackoffCap),
		clock:           systemClock{},
		rollbackTimeout: DefaultRollbackTimeout,
		adaptiveMax:     DefaultAdaptiveMax,
	}
}

func (c *config) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{ErrBadOption}, args...)...)
	}
}

func (c *config) runnerOnly(name string) bool {
	if c.perCall {
		c.fail("%s is a Runner option and cannot be set per call", name)
		return false
	}
	return true
}

// MaxAttempts limits how many times fn runs in one Run; 0 removes the limit
// (the context and MaxElapsed still apply). The default is
// DefaultMaxAttempts. A negative n is an error.
func MaxAttempts(n int) Option {
	return func(c *config) {
		if n < 0 {
			c.fail("MaxAttempts(%d) is negative", n)
			return
		}
		c.maxAttempts = n
	}
}

// MaxElapsed limits the time one Run may spend: a retry whose backoff would
// end past start+d is not started, and Run returns an error matching
// ErrElapsedExhausted. 0, the default, sets no limit beyond the context's
// deadline. A negative d is an error.
func MaxElapsed(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail("MaxElapsed(%v) is negative", d)
			return
		}
		c.maxElapsed = d
	}
}

// WithBackoff sets the backoff policy. The default is
// FullJitter(DefaultBackoffBase, DefaultBackoffCap). A nil policy is an error.
func WithBackoff(b Backoff) Option {
	return func(c *config) {
		if b == nil {
			c.fail("WithBackoff(nil)")
			return
		}
		if v, ok := b.(interface{ validate() error }); ok {
			if err := v.validate(); err != nil {
				c.fail("%v", err)
				return
			}
		}
		c.backoff = b
	}
}

// WithObserver sets the Observer that receives Run's events; combine several
// with Observers. nil turns observation off, which is the default.
func WithObserver(o Observer) Option {
	return func(c *config) { c.observer = o }
}

// WithClock replaces the system clock, for tests. Runner only. A nil clock
// is an error.
func WithClock(clk Clock) Option {
	return func(c *config) {
		if !c.runnerOnly("WithClock") {
			return
		}
		if clk == nil {
			c.fail("WithClock(nil)")
			return
		}
		c.clock = clk
	}
}

// WithSeed makes the Runner's jitter reproducible: the random source of each
// Run is drawn from a generator seeded with seed. Runner only.
func WithSeed(seed uint64) Option {
	return func(c *config) {
		if !c.runnerOnly("WithSeed") {
			return
		}
		c.seed, c.seeded = seed, true
	}
}

// RollbackTimeout bounds each rollback. Rollbacks run on a context detached
// from the caller's cancellation, so that locks are released even when the
// caller has gone away; this timeout keeps them from hanging. The default is
// DefaultRollbackTimeout; d must be positive.
func RollbackTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("RollbackTimeout(%v) must be positive", d)
			return
		}
		c.rollbackTimeout = d
	}
}

// Idempotent declares that running fn twice has the effect of running it
// once. Only then does Run re-run fn after an ambiguous commit (connection
// lost during COMMIT) instead of returning ErrCommitUnknown. Use it per call.
func Idempotent() Option {
	return func(c *config) { c.idempotent = true }
}

// WithBeginOptions passes backend-specific transaction options (isolation
// level, read-only, ...) to the backend's Begin. Backends wrap it in typed
// options such as txnpgx.TxOptions; users rarely call it directly.
func WithBeginOptions(v any) Option {
	return func(c *config) { c.beginOptions = v }
}

// RetryBudget bounds retries across all goroutines of a Runner: every Run
// deposits ratio of a token, every retry spends one, and a reserve of
// minPerSecond tokens per second lets a quiet Runner retry at all. When the
// budget is empty Run stops with an error matching ErrBudgetExhausted
// instead of retrying, so that a database in trouble receives at most about
// ratio·Runs + minPerSecond·seconds extra attempts rather than MaxAttempts
// times its load. Off by default; RetryBudget(0.2, 10) mirrors Finagle's
// default. Runner only. ratio and minPerSecond must be finite and not
// negative.
func RetryBudget(ratio, minPerSecond float64) Option {
	return func(c *config) {
		if !c.runnerOnly("RetryBudget") {
			return
		}
		if !(ratio >= 0) || !(minPerSecond >= 0) || math.IsInf(ratio, 0) || math.IsInf(minPerSecond, 0) {
			c.fail("RetryBudget(%v, %v) needs finite, non-negative numbers", ratio, minPerSecond)
			return
		}
		c.budget = newBudget(ratio, minPerSecond)
	}
}

// Operation names what this call does (an endpoint, a method, a use case):
// every observer event of the call carries the name in its Operation field,
// SlogObserver logs it as the "operation" attribute, and the txnotel module
// records it as the txn.operation metric attribute, so that retries and
// give-ups can be told apart per operation. Use it per call; given to New it
// names every call of the Runner that does not set its own. Keep the set of
// names small (a route pattern, not a URL with ids): metrics are split by
// it. The empty name, the default, means unnamed.
func Operation(name string) Option {
	return func(c *config) { c.operation = name }
}
