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

// flaky is a backend whose first n commits fail with a retryable error.
type flaky struct{ n int }

var errConflict = errors.New("conflict")

func (f *flaky) Begin(context.Context, []txn.BeginOption[int]) (int, error) { return 0, nil }
func (f *flaky) Commit(context.Context, int) error {
	if f.n > 0 {
		f.n--
		return errConflict
	}
	return nil
}
func (f *flaky) Rollback(context.Context, int) error { return nil }
func (f *flaky) Classify(err error) txn.Class {
	if errors.Is(err, errConflict) {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

func TestObserverRecordsSpanEventsAndMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := txnotel.NewObserver(txnotel.WithMeterProvider(mp))
	require.NoError(t, err)

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	ctx, span := tp.Tracer("test").Start(context.Background(), "transfer")

	r := txn.New[int](&flaky{n: 2}, txn.WithObserver(obs), txn.WithBackoff(txn.Constant(0)))
	require.NoError(t, r.Run(ctx, func(context.Context, int) error { return nil }))
	bad := errors.New("constraint violated")
	require.ErrorIs(t, r.Run(ctx, func(context.Context, int) error { return bad }), bad)
	span.End()

	ended := spans.Ended()
	require.Len(t, ended, 1)
	var names []string
	for _, ev := range ended[0].Events() {
		names = append(names, ev.Name)
	}
	assert.Equal(t, []string{"txn.retry", "txn.retry", "txn.commit", "txn.give_up"}, names)
	retry := ended[0].Events()[0]
	attrs := map[string]string{}
	for _, kv := range retry.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	assert.Equal(t, "retryable", attrs["txn.class"])
	assert.Equal(t, "conflict", attrs["exception.message"])

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, txnotel.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					sums[m.Name] += dp.Value
				}
			}
		}
	}
	assert.Equal(t, map[string]int64{"txn.attempts": 4, "txn.retries": 2, "txn.commits": 1, "txn.give_ups": 1}, sums)
}

func ExampleNewObserver() {
	obs, err := txnotel.NewObserver() // the global MeterProvider
	if err != nil {
		panic(err)
	}
	r := txn.New[int](&flaky{}, txn.WithObserver(obs))
	_ = r
	// Output:
}
