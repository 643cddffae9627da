package txn

import (
	"context"
	"time"
)

// Clock is the Runner's source of time. The default reads the system clock;
// tests substitute a fake through WithClock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits for d or until ctx is done, whichever comes first, and
	// returns ctx.Err() in the second case.
	Sleep(ctx context.Context, d time.Duration) error
}

// systemClock is the default Clock. base, when set, is a reading of the
// system clock that instant measures from.
type systemClock struct {
	base time.Time
}

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

// instant reads clk for a time that is only subtracted from, or compared
// with, other readings of clk (a start to measure a duration from). From
// the system clock it reads the monotonic clock alone, half the work of
// Now, which also reads the wall clock: the result carries the current
// monotonic reading, which Sub, Before and After use whenever both times
// have one, as every reading of the system clock does.
func instant(clk Clock) time.Time {
	if sc, ok := clk.(systemClock); ok && !sc.base.IsZero() {
		return sc.base.Add(time.Since(sc.base))
	}
	return clk.Now()
}
