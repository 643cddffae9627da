package txn

import (
	"sync"
	"sync/atomic"
	"time"
)

// budget is a retry budget in the manner of Finagle's: every Run deposits
// ratio tokens, every retry withdraws one, and a reserve refilled at
// minPerSecond lets a quiet Runner retry at all. Retries are thus bounded by
// ratio·Runs + minPerSecond·seconds + a small burst, whatever the failure
// rate, so a database that is down sees at most that much extra load.
type budget struct {
	ratio, perSecond, maxBalance float64

	// full is set, under mu, while balance is at maxBalance: a deposit,
	// which could add nothing, then returns without taking mu.
	full atomic.Bool

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
	if b.full.Load() {
		return
	}
	b.mu.Lock()
	b.balance += b.ratio
	if b.balance >= b.maxBalance {
		b.balance = b.maxBalance
		b.full.Store(true)
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
		b.full.Store(false)
	case b.reserve >= 1:
		b.reserve--
	default:
		return false
	}
	return true
}

// Defaults of the reconnect budget every Runner has unless NoReconnectBudget
// is given: each try that reached the database deposits DefaultReconnectRatio of a token,
// a reserve refills at DefaultReconnectPerSecond, and the balance starts full
// at its cap of DefaultReconnectBurst tokens.
const (
	DefaultReconnectRatio     = 0.1
	DefaultReconnectPerSecond = 1.0
	DefaultReconnectBurst     = 5
)

// newReconnectBudget returns a budget for the tries that could not reach
// the database, credited by the tries that did and starting full.
func newReconnectBudget(ratio, perSecond float64) *budget {
	b := newBudget(ratio, perSecond)
	b.maxBalance = DefaultReconnectBurst
	b.balance = b.maxBalance
	b.full.Store(true)
	return b
}
