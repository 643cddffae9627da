package txn_test

import (
	"context"
	"io"
	"log/slog"
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

// TestHappyPathAllocationsWithObservers: an Observer that does nothing, and
// a SlogObserver whose logger is above Debug, add no allocation to a Run
// that commits at once, with or without an Operation name.
func TestHappyPathAllocationsWithObservers(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race")
	}
	ctx := context.Background()
	fn := func(ctx context.Context, tx int) error { return nil }
	info := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for name, opts := range map[string][]txn.RunnerOption{
		"nop":             {txn.WithObserver(txn.NopObserver{})},
		"nop named":       {txn.WithObserver(txn.NopObserver{}), txn.Operation("POST /transfer")},
		"two nops named":  {txn.WithObserver(txn.Observers(txn.NopObserver{}, txn.NopObserver{})), txn.Operation("POST /transfer")},
		"slog info":       {txn.WithObserver(txn.SlogObserver(info))},
		"slog info named": {txn.WithObserver(txn.SlogObserver(info)), txn.Operation("POST /transfer")},
	} {
		t.Run(name, func(t *testing.T) {
			r := txn.New[int](&benchBackend{}, opts...)
			allocs := testing.AllocsPerRun(200, func() {
				if err := r.Run(ctx, fn); err != nil {
					t.Fatal(err)
				}
			})
			assert.LessOrEqual(t, allocs, 1.0, "allocations per Run")
		})
	}
}
