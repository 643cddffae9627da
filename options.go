package txn

import (
	"fmt"
	"math"
	"time"

	"github.com/txnkit/txn/internal/errchain"
)

// RunnerOption configures a Runner: New and every backend's constructor
// take them. Options that make sense only for a whole Runner (Adaptive,
// NoAdaptive, RetryBudget, WithClassifier, WithClock, Seed) are
// RunnerOptions only, so the compiler refuses them in a call of Run or Do.
type RunnerOption interface {
	applyRunner(c *config)
}

// CallOption configures one call of Run or Do. Options that make sense only
// for one call (Keys, Idempotent) are CallOptions only, so the compiler
// refuses them in New.
type CallOption interface {
	applyCall(c *config)
}

// Option is valid both for a Runner, where it sets the default of every
// call, and for a single call, where it overrides that default: MaxAttempts,
// MaxElapsed, WithBackoff, RollbackTimeout, WithObserver, Operation.
type Option interface {
	RunnerOption
	CallOption
}

// option is an Option.
type option func(*config)

func (o option) applyRunner(c *config) { o(c) }
func (o option) applyCall(c *config)   { o(c) }

// runnerOption is a RunnerOption only.
type runnerOption func(*config)

func (o runnerOption) applyRunner(c *config) { o(c) }

// callOption is a CallOption only.
type callOption func(*config)

func (o callOption) applyCall(c *config) { o(c) }

// config is what options set. A Runner holds one; a call with options works
// on a copy.
type config struct {
	// Runner and call.
	maxAttempts     int
	maxElapsed      time.Duration
	backoff         Backoff
	observer        Observer
	rollbackTimeout time.Duration

	// Call only.
	idempotent bool
	keys       []string
	operation  string

	// Runner only.
	clock       Clock
	classifier  Classifier
	budget      *budget
	reconnect   *budget
	seed        uint64
	seeded      bool
	adaptiveMax int
	dbKeys      bool
	startOpen   bool // tests: the limits start at their ceilings

	err error
}

func defaultConfig() config {
	return config{
		maxAttempts:     DefaultMaxAttempts,
		backoff:         FullJitter(DefaultBackoffBase, DefaultBackoffCap),
		clock:           systemClock{base: time.Now()},
		rollbackTimeout: DefaultRollbackTimeout,
		adaptiveMax:     DefaultAdaptiveMax,
		reconnect:       newReconnectBudget(DefaultReconnectRatio, DefaultReconnectPerSecond),
	}
}

// fail records the first invalid option.
func (c *config) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{ErrBadOption}, args...)...)
	}
}

// MaxAttempts limits how many times fn runs in one Run; 0 removes the limit
// (the context and MaxElapsed still apply). The default is
// DefaultMaxAttempts. A negative n is an error.
func MaxAttempts(n int) Option {
	return option(func(c *config) {
		if n < 0 {
			c.fail("MaxAttempts(%d) is negative", n)
			return
		}
		c.maxAttempts = n
	})
}

// MaxElapsed limits the time one Run may spend: a retry whose backoff would
// end past start+d is not started, and Run returns an error matching
// ErrElapsedExhausted. 0, the default, sets no limit beyond the context's
// deadline. A negative d is an error.
func MaxElapsed(d time.Duration) Option {
	return option(func(c *config) {
		if d < 0 {
			c.fail("MaxElapsed(%v) is negative", d)
			return
		}
		c.maxElapsed = d
	})
}

// WithBackoff sets the backoff policy. The default is
// FullJitter(DefaultBackoffBase, DefaultBackoffCap). A nil policy (also a
// nil BackoffFunc or a nil pointer), or a built-in one built with bad
// arguments, is an error.
func WithBackoff(b Backoff) Option {
	return option(func(c *config) {
		switch {
		case b == nil:
			c.fail("WithBackoff(nil)")
			return
		case errchain.IsNil(b):
			c.fail("WithBackoff(nil): the policy is a nil %T", b)
			return
		}
		if v, ok := b.(interface{ validate() error }); ok {
			if err := v.validate(); err != nil {
				// The built-in policies' errors already match
				// ErrBadOption: record them as they are.
				if c.err == nil {
					c.err = err
				}
				return
			}
		}
		c.backoff = b
	})
}

// WithObserver sets the Observer that receives Run's events; combine several
// with Observers. nil (also a nil pointer of an Observer type) turns
// observation off, which is the default.
func WithObserver(o Observer) Option {
	return option(func(c *config) {
		if errchain.IsNil(o) {
			o = nil // a nil pointer or function: observation off
		}
		c.observer = o
	})
}

// RollbackTimeout bounds each rollback. Rollbacks run on a context detached
// from the caller's cancellation, so that locks are released even when the
// caller has gone away; this timeout keeps them from hanging. The default is
// DefaultRollbackTimeout; d must be positive.
func RollbackTimeout(d time.Duration) Option {
	return option(func(c *config) {
		if d <= 0 {
			c.fail("RollbackTimeout(%v) must be positive", d)
			return
		}
		c.rollbackTimeout = d
	})
}

// Idempotent declares that running fn twice has the effect of running it
// once. Only then does Run re-run fn after an ambiguous commit (connection
// lost during COMMIT) instead of returning ErrCommitUnknown.
func Idempotent() CallOption {
	return callOption(func(c *config) { c.idempotent = true })
}

// Keys names what this call's transaction will write (an account id, an
// order number): calls of the same Runner naming a common key run their
// attempts one at a time, in arrival order, while calls on disjoint keys run
// in parallel. An empty key is an error.
func Keys(keys ...string) CallOption {
	return callOption(func(c *config) {
		for _, k := range keys {
			if k == "" {
				c.fail("Keys: empty key")
				return
			}
		}
		c.keys = keys
	})
}

// WithClock replaces the system clock, for tests. A nil clock (also a nil
// pointer) is an error.
func WithClock(clk Clock) RunnerOption {
	return runnerOption(func(c *config) {
		if errchain.IsNil(clk) {
			c.fail("WithClock(nil): the clock is a nil %T", clk)
			return
		}
		c.clock = clk
	})
}

// Seed makes the Runner's jitter reproducible: the random source of each
// Run is drawn from a generator seeded with seed.
func Seed(seed uint64) RunnerOption {
	return runnerOption(func(c *config) { c.seed, c.seeded = seed, true })
}

// WithClassifier replaces the backend's error table with c: c decides the
// class of every error fn returns or the database reports, except those
// marked with Retry or Permanent. What c leaves permanent is still checked
// for a lost connection by backends that implement ConnClassifier (all of
// this module's SQL backends do), so that a COMMIT cut off mid-flight is
// never taken for a definite failure. Build c from a backend's Classify, or
// its Classifier with options, to extend the table. A nil c is an error.
func WithClassifier(cl Classifier) RunnerOption {
	return runnerOption(func(c *config) {
		if cl == nil {
			c.fail("WithClassifier(nil)")
			return
		}
		c.classifier = cl
	})
}

// RetryBudget bounds retries across all goroutines of a Runner: every Run
// deposits ratio of a token, every retry spends one, and a reserve of
// minPerSecond tokens per second lets a quiet Runner retry at all. When the
// budget is empty Run stops with an error matching ErrBudgetExhausted
// instead of retrying, so that a database in trouble receives at most about
// ratio·Runs + minPerSecond·seconds extra attempts rather than MaxAttempts
// times its load. Off by default; RetryBudget(0.2, 10) mirrors Finagle's
// default. ratio and minPerSecond must be finite and not negative.
func RetryBudget(ratio, minPerSecond float64) RunnerOption {
	return runnerOption(func(c *config) {
		if !(ratio >= 0) || !(minPerSecond >= 0) || math.IsInf(ratio, 0) || math.IsInf(minPerSecond, 0) {
			c.fail("RetryBudget(%v, %v) needs finite, non-negative numbers", ratio, minPerSecond)
			return
		}
		c.budget = newBudget(ratio, minPerSecond)
	})
}

// Adaptive sets the ceiling of the Runner's adaptive concurrency control,
// which is on by default with DefaultAdaptiveMax: at most limit attempts run
// at once, where limit shrinks when attempts conflict and grows back while
// they commit cleanly, between 1 and max (0 means DefaultAdaptiveMax).
// When the backend knows the size of its connection pool (PoolSizer), the
// ceiling is the smaller of max and that size: more attempts than
// connections would only wait inside the pool. Attempts over the limit wait
// in a first-in, first-out queue and leave it as soon as their context
// ends; retries of a Run that conflicted also pass a narrower retry lane
// (see AdmissionStats). max must not be negative; a max above MaxAdaptive
// is taken as MaxAdaptive.
func Adaptive(max int) RunnerOption {
	return runnerOption(func(c *config) {
		if max < 0 {
			c.fail("Adaptive(%d) is negative", max)
			return
		}
		if max == 0 {
			max = DefaultAdaptiveMax
		}
		// The controller computes in float64: keep the ceiling where
		// every integer is exact and conversions cannot overflow. No
		// process runs more attempts at once.
		c.adaptiveMax = min(max, MaxAdaptive)
	})
}

// NoAdaptive turns the adaptive concurrency control off: attempts start as
// soon as they are called, however many conflict. Measured with txnbench,
// the control never cost more than noise at low contention and kept goodput
// near the serial rate in storms (see the README), so turn it off only to
// compare, or when something outside the Runner already limits concurrency
// per hot row.
func NoAdaptive() RunnerOption {
	return runnerOption(func(c *config) { c.adaptiveMax = 0 })
}

// DatabaseKeys makes the conflict keys of every call (Keys) hold across
// processes: besides taking them in the Runner, in arrival order, each
// attempt takes them in the database, in sorted order, on its connection
// before BEGIN (so that its snapshot is taken once it holds them), and
// holds them until its transaction ended (PostgreSQL advisory locks on a
// 64-bit hash of each key, MySQL and MariaDB named locks), so that replicas of a service serialize a hot key without a
// coordinator of their own. The backend must implement KeyLocker (txnpgx
// and txnmysql do); for any other New returns a Runner whose Err matches
// ErrBadOption. Calls without Keys are not affected. The stall escape
// (the README's guarantee 7) shares a key only once one of its holders
// in this Runner has begun its transaction, and then shares its database
// lock too, rather than wait for it in the database (a Run started inside
// fn with a fresh context, on its caller's key); while the holders wait in
// the database for another process, the waiters stay in the Runner's
// queue.
func DatabaseKeys() RunnerOption {
	return runnerOption(func(c *config) { c.dbKeys = true })
}

// ReconnectBudget sets the Runner's reconnect budget, which is on by
// default (DefaultReconnectRatio, DefaultReconnectPerSecond). It applies only
// to tries that could not reach the database: BEGIN failed with a
// connection failure, so fn did not run. Another such try spends a token; every try that reached the
// database deposits ratio of one, a reserve refills at minPerSecond, and the balance starts
// full at DefaultReconnectBurst. When it is empty Run stops at once with an
// error matching ErrUnavailable, so a stopped database costs about one
// connection attempt per Run instead of MaxAttempts, and each Run returns
// after one refused connection. Retries after fn ran (conflicts, deadlocks,
// lost connections during a statement) never touch it. ratio and
// minPerSecond must be finite and not negative.
func ReconnectBudget(ratio, minPerSecond float64) RunnerOption {
	return runnerOption(func(c *config) {
		if !(ratio >= 0) || !(minPerSecond >= 0) || math.IsInf(ratio, 0) || math.IsInf(minPerSecond, 0) {
			c.fail("ReconnectBudget(%v, %v) needs finite, non-negative numbers", ratio, minPerSecond)
			return
		}
		c.reconnect = newReconnectBudget(ratio, minPerSecond)
	})
}

// NoReconnectBudget turns the reconnect budget off: a Run whose BEGIN keeps
// failing tries again until MaxAttempts, MaxElapsed or its context stops it.
func NoReconnectBudget() RunnerOption {
	return runnerOption(func(c *config) { c.reconnect = nil })
}

// MaxAdaptive is the largest ceiling Adaptive accepts; larger ones are
// lowered to it.
const MaxAdaptive = math.MaxInt32

// Operation names what a call does (an endpoint, a method, a use case):
// every observer event of the call carries the name in its Operation field,
// SlogObserver logs it as the "operation" attribute, and the txnotel module
// records it as the txn.operation metric attribute, so that retries and
// give-ups can be told apart per operation. Given to New it names every
// call of the Runner that does not set its own. Keep the set of names small
// (a route pattern, not a URL with ids): metrics are split by it. The empty
// name, the default, means unnamed.
func Operation(name string) Option {
	return option(func(c *config) { c.operation = name })
}
