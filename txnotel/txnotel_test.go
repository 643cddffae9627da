package txnotel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
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

func TestObserverOperationAttribute(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	obs, err := txnotel.NewObserver(txnotel.WithMeterProvider(mp))
	require.NoError(t, err)
	r := txn.New[int](&flaky{n: 1}, txn.WithObserver(obs), txn.WithBackoff(txn.Constant(0)))
	ctx := context.Background()
	require.NoError(t, r.Run(ctx, func(context.Context, int) error { return nil }, txn.Operation("POST /transfer")))
	bad := errors.New("constraint violated")
	require.ErrorIs(t, r.Run(ctx, func(context.Context, int) error { return bad }, txn.Operation("GET /balance")), bad)
	require.NoError(t, r.Run(ctx, func(context.Context, int) error { return nil }))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	// per metric name, the sum (or count) by operation ("" when unnamed)
	got := map[string]map[string]int64{}
	add := func(name string, set attribute.Set, v int64) {
		op, _ := set.Value("txn.operation")
		if got[name] == nil {
			got[name] = map[string]int64{}
		}
		got[name][op.AsString()] += v
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					add(m.Name, dp.Attributes, dp.Value)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					add(m.Name, dp.Attributes, int64(dp.Count))
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					add(m.Name, dp.Attributes, int64(dp.Count))
				}
			}
		}
	}
	assert.Equal(t, map[string]int64{"POST /transfer": 2, "GET /balance": 1, "": 1}, got["txn.attempts"])
	assert.Equal(t, map[string]int64{"POST /transfer": 1}, got["txn.retries"])
	assert.Equal(t, map[string]int64{"POST /transfer": 1, "": 1}, got["txn.commits"])
	assert.Equal(t, map[string]int64{"GET /balance": 1}, got["txn.give_ups"])
	assert.Equal(t, map[string]int64{"POST /transfer": 1, "GET /balance": 1, "": 1}, got["txn.run.duration"])
	assert.Equal(t, map[string]int64{"POST /transfer": 1, "GET /balance": 1, "": 1}, got["txn.run.attempts"])
}
