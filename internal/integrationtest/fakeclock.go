package integrationtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn/internal/fakeclock"
)

// AdvanceStalls advances clk by step whenever one of its timers waits (a
// stall interval, a backoff), for as long as done has not delivered, and
// returns what it delivered: the stall escape then admits a Run that waits
// on its own caller. It fails t if done delivers nothing within 30 s.
func AdvanceStalls(t testing.TB, clk *fakeclock.Clock, step time.Duration, done <-chan error) error {
	t.Helper()
	limit := time.After(30 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		case <-limit:
			require.FailNow(t, "the Run did not return")
		case <-time.After(time.Millisecond):
			if clk.Timers() > 0 {
				clk.Advance(step)
			}
		}
	}
}
