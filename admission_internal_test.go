package txn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests drive the controller directly, attempt by attempt, so that
// its arithmetic is checked without goroutine scheduling in the way.

// durClock reads d after the zero time: every grant (start zero) has then
// run for d.
type durClock time.Duration

func (c durClock) Now() time.Time                                   { return time.Time{}.Add(time.Duration(c)) }
func (c durClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func admitN(t *testing.T, a *adaptive, n int) []grant {
	t.Helper()
	ts := make([]grant, n)
	for i := range ts {
		tk, err := a.acquire(context.Background())
		require.NoError(t, err)
		require.False(t, tk.waited, "attempt %d of %d was not admitted at once (limit %v)", i+1, n, a.limit)
		ts[i] = tk
	}
	return ts
}

func TestAdaptiveProbesBackOffUnderSteadyStorm(t *testing.T) {
	a := newAdaptive(8, systemClock{})
	ms := time.Millisecond
	// A storm: everything that runs side by side conflicts.
	for a.allowed() > 1 {
		for _, tk := range admitN(t, a, a.allowed()) {
			a.release(tk, endConflict, durClock(ms))
		}
	}
	// commitsToTwo counts the clean commits, one at a time, until the limit
	// admits two attempts; probe then runs two side by side and the second
	// conflicts, as it always does on the same rows.
	commitsToTwo := func() int {
		n := 0
		for a.allowed() < 2 {
			a.release(admitN(t, a, 1)[0], endCommitted, durClock(ms))
			n++
			require.LessOrEqual(t, n, 1_000_000, "the limit never reached two")
		}
		return n
	}
	probe := func() {
		ts := admitN(t, a, 2)
		a.release(ts[0], endCommitted, durClock(ms))
		a.release(ts[1], endConflict, durClock(ms))
		require.Equal(t, 1, a.allowed(), "a failed probe left the limit above one")
	}
	var got []int
	for i := 0; i < 6; i++ {
		got = append(got, commitsToTwo())
		probe()
	}
	for i := 1; i < len(got); i++ {
		require.GreaterOrEqual(t, float64(got[i]), 1.3*float64(got[i-1]), "each failed probe should make the next wait longer, by 1+F: %v", got)
	}

	// The storm ends: the limit opens again, and each level passed halves
	// the patience the storm built up.
	stormPatience := a.patience
	n := 0
	for a.allowed() < 8 {
		ts := admitN(t, a, a.allowed())
		for _, tk := range ts {
			a.release(tk, endCommitted, durClock(ms))
			n++
		}
	}
	assert.GreaterOrEqual(t, stormPatience, 50.0, "patience in the storm")
	assert.LessOrEqual(t, a.patience, stormPatience/32, "patience after reopening over %d commits", n)
}

func TestAdaptiveDeadlockOutweighsQuickConflicts(t *testing.T) {
	a := newAdaptive(64, systemClock{})
	// One quick conflict ends the calm (in which nothing is measured)...
	ts := admitN(t, a, 16)
	a.release(ts[0], endConflict, durClock(time.Millisecond))
	for _, tk := range ts[1:] {
		a.release(tk, endCommitted, durClock(time.Millisecond))
	}
	// ...then rounds of sixteen side by side, quick clean commits of 1ms...
	for i := 0; i < 64; i++ {
		for _, tk := range admitN(t, a, min(16, a.allowed())) {
			a.release(tk, endCommitted, durClock(time.Millisecond))
		}
	}
	before := a.conflict
	// ...then one attempt that waited a second for deadlock detection.
	ts = admitN(t, a, 2)
	a.release(ts[0], endConflict, durClock(time.Second))
	a.release(ts[1], endCommitted, durClock(time.Millisecond))
	assert.LessOrEqual(t, before, 0.01, "F before the deadlock")
	assert.GreaterOrEqual(t, a.conflict, 0.9, "one deadlock should count for the time it cost")
	assert.GreaterOrEqual(t, a.patience, 1.8, "a deadlock should nearly double patience")
}

func TestAdaptiveQuickConflictWeighsLittle(t *testing.T) {
	a := newAdaptive(64, systemClock{})
	for i := 0; i < 8; i++ {
		for _, tk := range admitN(t, a, 16) {
			a.release(tk, endCommitted, durClock(time.Millisecond))
		}
	}
	ts := admitN(t, a, 16)
	a.release(ts[0], endConflict, durClock(time.Millisecond))
	for _, tk := range ts[1:] {
		a.release(tk, endCommitted, durClock(time.Millisecond))
	}
	assert.LessOrEqual(t, a.conflict, 0.07, "F after one quick conflict among many commits")
	assert.GreaterOrEqual(t, a.allowed(), 15, "one quick conflict among 16 should cost about 3%")
	assert.Equal(t, 1.0, a.patience, "rare conflicts leave patience alone")
}
