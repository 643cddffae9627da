package txn_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn"
)

// TestHappyPathAllocatesOnlyTheFrame: a Run that commits at once allocates
// one object, the frame that carries the transaction in fn's context, with
// the default Runner (adaptive limit, reconnect budget) and without the
// limit. It counts allocations, not time; the race detector's own
// allocations would count too, so the check runs only without it.
func TestHappyPathAllocatesOnlyTheFrame(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race")
	}
	ctx := context.Background()
	fn := func(ctx context.Context, tx int) error { return nil }
	for name, r := range map[string]*txn.Runner[int]{
		"default":    txn.New[int](&benchBackend{}),
		"NoAdaptive": txn.New[int](&benchBackend{}, txn.NoAdaptive()),
	} {
		t.Run(name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(200, func() {
				if err := r.Run(ctx, fn); err != nil {
					t.Fatal(err)
				}
			})
			assert.LessOrEqual(t, allocs, 1.0, "allocations per Run")
		})
	}
}
