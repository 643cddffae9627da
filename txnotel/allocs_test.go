package txnotel_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txnotel"
)

// TestHappyPathAllocatesNothingMore: with the Observer attached, a Run that
// commits at once allocates no more than without it (the frame that carries
// the transaction), whether the call has an Operation name or not, with the
// SDK's MeterProvider or a no-op one, as long as the context carries no
// recording span (a span event is the SDK's allocation). It counts
// allocations, not time, and runs only without the race detector.
func TestHappyPathAllocatesNothingMore(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race")
	}
	ctx := context.Background()
	fn := func(context.Context, int) error { return nil }
	plain := txn.New[int](&flaky{})
	base := testing.AllocsPerRun(200, func() { _ = plain.Run(ctx, fn) })

	reader := sdkmetric.NewManualReader()
	sdk, err := txnotel.NewObserver(txnotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	require.NoError(t, err)
	nop, err := txnotel.NewObserver(txnotel.WithMeterProvider(noop.NewMeterProvider()))
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		obs  *txnotel.Observer
		op   string
	}{
		{"sdk", sdk, ""}, {"sdk named", sdk, "POST /transfer"},
		{"noop", nop, ""}, {"noop named", nop, "POST /transfer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := txn.New[int](&flaky{}, txn.WithObserver(c.obs), txn.Operation(c.op))
			allocs := testing.AllocsPerRun(200, func() {
				if err := r.Run(ctx, fn); err != nil {
					t.Fatal(err)
				}
			})
			assert.LessOrEqual(t, allocs, base, "allocations per Run with txnotel, %v without", base)
		})
	}
	// The measurements still land where they belong.
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	commits := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "txn.commits" {
				for _, dp := range s.DataPoints {
					op, _ := dp.Attributes.Value("txn.operation")
					commits[op.AsString()] += dp.Value
				}
			}
		}
	}
	assert.Equal(t, map[string]int64{"": 201, "POST /transfer": 201}, commits)
}
