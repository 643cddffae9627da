package txnotel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txnotel"
)

// beginFlaky is a backend whose first beginFails BEGINs fail with a
// retryable error.
type beginFlaky struct {
	flaky
	beginFails int
}

func (f *beginFlaky) Begin(context.Context, []txn.BeginOption[int]) (int, error) {
	if f.beginFails > 0 {
		f.beginFails--
		return 0, errConflict
	}
	return 0, nil
}

// metrics collects the sums of the counters and the sums and counts of the
// histograms.
func metrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name] += float64(dp.Value)
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					out[m.Name+".sum"] += float64(dp.Sum)
					out[m.Name+".count"] += float64(dp.Count)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out[m.Name+".count"] += float64(dp.Count)
				}
			}
		}
	}
	return out
}

// TestMetricsMatchWhatRunsDid: across Runs that commit, retry, fail at
// BEGIN, give up, find their context done and panic, txn.attempts counts
// the runs of fn, which is the sum of txn.run.attempts over the Runs that
// finished plus the attempts of the panicking one; every finished Run is a
// commit or a give-up; the caller's span is the only span, ended once by
// its owner, and carries one terminal event per finished Run.
func TestMetricsMatchWhatRunsDid(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	obs, err := txnotel.NewObserver(txnotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	require.NoError(t, err)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")

	b := &beginFlaky{}
	r := txn.New[int](b, txn.WithObserver(obs), txn.WithBackoff(txn.Constant(0)), txn.NoReconnectBudget(), txn.MaxAttempts(3))
	ok := func(context.Context, int) error { return nil }
	// 1 attempt, commit
	require.NoError(t, r.Run(ctx, ok))
	// 2 failed BEGINs, then 1 attempt, commit
	b.beginFails = 2
	require.NoError(t, r.Run(ctx, ok))
	// 3 attempts conflicting at commit, give up at the attempt limit
	b.n = 3
	require.ErrorIs(t, r.Run(ctx, ok), txn.ErrAttemptsExhausted)
	// 1 attempt, permanent error
	require.Error(t, r.Run(ctx, func(context.Context, int) error { return errors.New("bad") }))
	// context done before the first attempt: a give-up of 0 attempts
	done, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, r.Run(done, ok), context.Canceled)
	// 1 attempt that panics: counted, never finished
	require.Panics(t, func() { _ = r.Run(ctx, func(context.Context, int) error { panic("boom") }) })
	span.End()

	m := metrics(t, reader)
	assert.Equal(t, 7.0, m["txn.attempts"], "runs of fn")
	assert.Equal(t, 6.0, m["txn.run.attempts.sum"], "attempts of the finished Runs")
	assert.Equal(t, 5.0, m["txn.run.attempts.count"], "finished Runs")
	assert.Equal(t, 5.0, m["txn.run.duration.count"], "finished Runs")
	assert.Equal(t, 2.0, m["txn.commits"])
	assert.Equal(t, 3.0, m["txn.give_ups"])
	assert.Equal(t, 4.0, m["txn.retries"], "two failed BEGINs and two conflicts retried")

	require.Len(t, spans.Started(), 1, "txnotel starts no span of its own")
	require.Len(t, spans.Ended(), 1)
	var names []string
	for _, ev := range spans.Ended()[0].Events() {
		names = append(names, ev.Name)
	}
	assert.Equal(t, []string{
		"txn.commit",
		"txn.retry", "txn.retry", "txn.commit",
		"txn.retry", "txn.retry", "txn.give_up",
		"txn.give_up",
		"txn.give_up",
	}, names)
}
