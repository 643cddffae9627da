package txn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepClock is a clock moved by hand.
type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time                                   { return c.now }
func (c *stepClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// coldStartRounds simulates a cold start of workers Runs on one hot row
// through a pool of pool connections: every admitted attempt waits for a
// connection (its BEGIN) until one is free; each round, the attempts
// holding a connection run for one attempt time side by side, one commits
// and the others conflict, and the Runs go round again. It returns the
// number of rounds until the limit is at most target.
func coldStartRounds(t *testing.T, ceiling, workers, pool, target int) int {
	t.Helper()
	a := newAdaptive(ceiling, systemClock{})
	clk := &stepClock{now: time.Unix(1, 0)}
	done, cancel := context.WithCancel(context.Background())
	cancel() // acquire with a done context only admits what it can at once
	var waiting, running []grant
	for round := 1; round <= 1000; round++ {
		for len(waiting)+len(running) < workers {
			g, err := a.acquire(done)
			if err != nil {
				break
			}
			waiting = append(waiting, g)
		}
		for len(running) < pool && len(waiting) > 0 {
			g := waiting[0]
			waiting = waiting[1:]
			a.began(&g, clk.now)
			running = append(running, g)
		}
		clk.now = clk.now.Add(5 * time.Millisecond)
		for i, g := range running {
			end := endConflict
			if i == 0 {
				end = endCommitted
			}
			a.release(g, end, clk)
		}
		running = running[:0]
		if a.allowed() <= target {
			return round
		}
	}
	require.FailNow(t, "the limit never converged", "ceiling %d: limit %v", ceiling, a.limit)
	return 0
}

// From a cold start the limit reaches the hot row's level in a few attempt
// times, however high its ceiling and however many attempts were admitted
// before the first cut (they cannot all wait for that generation to end).
func TestAdaptiveColdStartBounded(t *testing.T) {
	atPool := coldStartRounds(t, 20, 200, 20, 2)
	wide := coldStartRounds(t, DefaultAdaptiveMax, 200, 20, 2)
	t.Logf("rounds: %d at the pool, %d wide", atPool, wide)
	assert.LessOrEqual(t, atPool, 8, "rounds from a ceiling at the pool's size")
	assert.LessOrEqual(t, wide, 8, "rounds from a ceiling of %d with 200 attempts admitted", DefaultAdaptiveMax)
}
