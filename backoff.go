package txn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff decides how long Run waits before a retry. Implementations must be
// safe for concurrent use; per-Run state arrives as arguments.
type Backoff interface {
	// Delay returns the wait before retry number retry (1 for the first
	// retry). prev is the delay returned for the previous retry of the same
	// Run (0 before the first), and rnd is a random source owned by that Run.
	// A negative result is treated as zero.
	Delay(retry int, prev time.Duration, rnd *rand.Rand) time.Duration
}

// BackoffFunc adapts a function to the Backoff interface.
type BackoffFunc func(retry int, prev time.Duration, rnd *rand.Rand) time.Duration

// Delay calls f.
func (f BackoffFunc) Delay(retry int, prev time.Duration, rnd *rand.Rand) time.Duration {
	return f(retry, prev, rnd)
}

// Defaults of a Runner built without options.
const (
	// DefaultMaxAttempts is the default limit on executions of fn per Run.
	DefaultMaxAttempts = 10
	// DefaultBackoffBase is the first retry's ceiling in the default backoff.
	DefaultBackoffBase = 5 * time.Millisecond
	// DefaultBackoffCap is the largest delay of the default backoff.
	DefaultBackoffCap = 1 * time.Second
	// DefaultRollbackTimeout bounds each rollback, which runs on a context
	// that the caller's cancellation does not reach.
	DefaultRollbackTimeout = 5 * time.Second
)

// jitterKind names the built-in policies. Their constructors (FullJitter,
// EqualJitter, DecorrelatedJitter, NoJitter, Constant) return a Backoff; a
// negative base, or a cap below base, makes WithBackoff fail with an error
// matching ErrBadOption.
type jitterKind uint8

const (
	jitterFull jitterKind = iota
	jitterEqual
	jitterDecorrelated
	jitterNone
)

// policy is a built-in backoff: capped exponential with a kind of jitter,
// or constant (base == cap, no jitter).
type policy struct {
	base, cap time.Duration
	kind      jitterKind
	err       error
}

func newPolicy(name string, base, maxDelay time.Duration, kind jitterKind) policy {
	e := policy{base: base, cap: maxDelay, kind: kind}
	switch {
	case base < 0:
		e.err = fmt.Errorf("%w: %s base %v is negative", ErrBadOption, name, base)
	case maxDelay < base:
		e.err = fmt.Errorf("%w: %s cap %v is below base %v", ErrBadOption, name, maxDelay, base)
	}
	return e
}

// FullJitter returns exponential backoff with full jitter: retry n waits a
// uniformly random time in [0, min(maxDelay, base·2^(n-1))]. It spreads
// competing retries furthest apart and is the default, with
// DefaultBackoffBase and DefaultBackoffCap.
func FullJitter(base, maxDelay time.Duration) Backoff {
	return newPolicy("FullJitter", base, maxDelay, jitterFull)
}

// EqualJitter returns exponential backoff with equal jitter: retry n waits
// t/2 plus a uniformly random time in [0, t/2], t = min(maxDelay, base·2^(n-1)).
func EqualJitter(base, maxDelay time.Duration) Backoff {
	return newPolicy("EqualJitter", base, maxDelay, jitterEqual)
}

// DecorrelatedJitter returns decorrelated jitter: each delay is uniformly
// random in [base, 3·previous delay], capped at maxDelay.
func DecorrelatedJitter(base, maxDelay time.Duration) Backoff {
	return newPolicy("DecorrelatedJitter", base, maxDelay, jitterDecorrelated)
}

// NoJitter returns plain capped exponential backoff: min(maxDelay, base·2^(n-1)).
func NoJitter(base, maxDelay time.Duration) Backoff {
	return newPolicy("NoJitter", base, maxDelay, jitterNone)
}

// Constant returns a backoff that always waits d. Constant(0) retries at once.
func Constant(d time.Duration) Backoff {
	return newPolicy("Constant", d, d, jitterNone)
}

// ceiling returns min(cap, base·2^(retry-1)) without overflow.
func (e policy) ceiling(retry int) time.Duration {
	if retry < 1 {
		retry = 1
	}
	shift := uint(retry - 1)
	if shift >= 62 || e.base > e.cap>>shift {
		return e.cap
	}
	return e.base << shift
}

// Delay implements Backoff.
func (e policy) Delay(retry int, prev time.Duration, rnd *rand.Rand) time.Duration {
	switch e.kind {
	case jitterFull:
		return upTo(rnd, e.ceiling(retry))
	case jitterEqual:
		t := e.ceiling(retry)
		return t/2 + upTo(rnd, t-t/2)
	case jitterDecorrelated:
		if prev < e.base {
			prev = e.base
		}
		hi := prev * 3
		if hi > e.cap || hi/3 != prev {
			hi = e.cap
		}
		return e.base + upTo(rnd, hi-e.base)
	default:
		return e.ceiling(retry)
	}
}

// validate reports a bad construction.
func (e policy) validate() error { return e.err }

// upTo returns a uniformly random duration in [0, d], for any d ≥ 0 up to
// the largest Duration (where d+1 would overflow).
func upTo(rnd *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	if d == math.MaxInt64 {
		return time.Duration(rnd.Int64()) // [0, MaxInt64]
	}
	return time.Duration(rnd.Int64N(int64(d) + 1))
}
