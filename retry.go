package txn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
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

// jitterKind names the built-in policies.
type jitterKind uint8

const (
	jitterFull jitterKind = iota
	jitterEqual
	jitterDecorrelated
	jitterNone
)

// Exponential is a built-in capped exponential backoff. Build it with
// FullJitter, EqualJitter, DecorrelatedJitter, Constant or NoJitter.
type Exponential struct {
	base, cap time.Duration
	kind      jitterKind
	err       error
}

func newExponential(name string, base, maxDelay time.Duration, kind jitterKind) Exponential {
	e := Exponential{base: base, cap: maxDelay, kind: kind}
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
func FullJitter(base, maxDelay time.Duration) Exponential {
	return newExponential("FullJitter", base, maxDelay, jitterFull)
}

// EqualJitter returns exponential backoff with equal jitter: retry n waits
// t/2 plus a uniformly random time in [0, t/2], t = min(maxDelay, base·2^(n-1)).
func EqualJitter(base, maxDelay time.Duration) Exponential {
	return newExponential("EqualJitter", base, maxDelay, jitterEqual)
}

// DecorrelatedJitter returns decorrelated jitter: each delay is uniformly
// random in [base, 3·previous delay], capped at maxDelay.
func DecorrelatedJitter(base, maxDelay time.Duration) Exponential {
	return newExponential("DecorrelatedJitter", base, maxDelay, jitterDecorrelated)
}

// NoJitter returns plain capped exponential backoff: min(maxDelay, base·2^(n-1)).
func NoJitter(base, maxDelay time.Duration) Exponential {
	return newExponential("NoJitter", base, maxDelay, jitterNone)
}

// Constant returns a backoff that always waits d. Constant(0) retries at once.
func Constant(d time.Duration) Exponential {
	return newExponential("Constant", d, d, jitterNone)
}

// ceiling returns min(cap, base·2^(retry-1)) without overflow.
func (e Exponential) ceiling(retry int) time.Duration {
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
func (e Exponential) Delay(retry int, prev time.Duration, rnd *rand.Rand) time.Duration {
	switch e.kind {
	case jitterFull:
		return time.Duration(rnd.Int64N(int64(e.ceiling(retry)) + 1))
	case jitterEqual:
		t := e.ceiling(retry)
		return t/2 + time.Duration(rnd.Int64N(int64(t-t/2)+1))
	case jitterDecorrelated:
		if prev < e.base {
			prev = e.base
		}
		hi := prev * 3
		if hi > e.cap || hi < prev {
			hi = e.cap
		}
		return e.base + time.Duration(rnd.Int64N(int64(hi-e.base)+1))
	default:
		return e.ceiling(retry)
	}
}

// validate reports a bad construction.
func (e Exponential) validate() error { return e.err }

// Clock is the Runner's source of time. The default reads the system clock;
// tests substitute a fake through WithClock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits for d or until ctx is done, whichever comes first, and
	// returns ctx.Err() in the second case.
	Sleep(ctx context.Context, d time.Duration) error
}

// systemClock is the default Clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// budget is a retry budget in the manner of Finagle's: every Run deposits
// ratio tokens, every retry withdraws one, and a reserve refilled at
// minPerSecond lets a quiet Runner retry at all. Retries are thus bounded by
// ratio·Runs + minPerSecond·seconds + a small burst, whatever the failure
// rate, so a database that is down sees at most that much extra load.
type budget struct {
	ratio, perSecond, maxBalance float64

	mu      sync.Mutex
	balance float64
	reserve float64
	last    time.Time
}

func newBudget(ratio, perSecond float64) *budget {
	maxBalance := ratio * 100
	if maxBalance < 10 {
		maxBalance = 10
	}
	return &budget{ratio: ratio, perSecond: perSecond, maxBalance: maxBalance, reserve: perSecond}
}

// deposit credits one Run.
func (b *budget) deposit() {
	b.mu.Lock()
	b.balance += b.ratio
	if b.balance > b.maxBalance {
		b.balance = b.maxBalance
	}
	b.mu.Unlock()
}

// withdraw takes a token for one retry and reports whether there was one.
func (b *budget) withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.reserve += b.perSecond * now.Sub(b.last).Seconds()
		if limit := max(b.perSecond, 1); b.reserve > limit {
			b.reserve = limit
		}
	}
	b.last = now
	switch {
	case b.balance >= 1:
		b.balance--
	case b.reserve >= 1:
		b.reserve--
	default:
		return false
	}
	return true
}
