// Package txnotel reports what txn Runners do to OpenTelemetry: span events
// on the caller's span, and metrics.
//
//	obs, err := txnotel.NewObserver()
//	if err != nil { ... }
//	r := txnpgx.New(pool, txn.WithObserver(obs))
//
// Span events, added to the span in the context given to Run when it is
// recording: "txn.retry" (attributes txn.attempt, txn.class, txn.delay_ms,
// exception.message), "txn.give_up" (txn.attempts, txn.class,
// exception.message), "txn.commit" (txn.attempts) and "txn.admission_wait"
// (txn.wait_ms, txn.limit, txn.queue).
//
// Metrics, from the meter named "github.com/txnkit/txn". Every measurement
// of a call named with txn.Operation also carries the attribute
// txn.operation (for txnhttp, the route pattern; for txngrpc, the full
// method name), and so do the span events:
//
//	txn.attempts        counter    executions of fn
//	txn.retries         counter    retries, by txn.class
//	txn.commits         counter    successful Runs
//	txn.give_ups        counter    failed Runs, by txn.class of the last error
//	txn.run.duration    histogram  seconds from the start of Run to commit or give-up, by txn.outcome
//	txn.run.attempts    histogram  attempts per finished Run, by txn.outcome
//	txn.admission.wait  histogram  seconds waited for admission
//
// On the happy path (a Run that commits at its first attempt) the Observer
// allocates nothing, named operation or not: the attribute sets of each
// operation name are built once (for the first 1024 names an Observer
// sees; the events of further names build theirs each time). A recording
// span in the context gets a "txn.commit" event per Run, which the SDK
// allocates.
package txnotel

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/txnkit/txn"
)

// ScopeName is the instrumentation scope of the meter.
const ScopeName = "github.com/txnkit/txn"

// Option configures NewObserver.
type Option func(*settings)

type settings struct {
	mp metric.MeterProvider
}

// WithMeterProvider sets the MeterProvider; the default is the global one.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(s *settings) { s.mp = mp }
}

// Observer is a txn.Observer that records to OpenTelemetry. It is safe for
// concurrent use; share one among Runners.
type Observer struct {
	attempts  metric.Int64Counter
	retries   metric.Int64Counter
	commits   metric.Int64Counter
	giveUps   metric.Int64Counter
	duration  metric.Float64Histogram
	perRun    metric.Int64Histogram
	admission metric.Float64Histogram

	// unnamed holds the options of a call without an Operation name, and
	// ops those of each name seen (at most maxOps of them), so that a
	// Run's happy path builds no attribute set and no option slice.
	unnamed opOptions
	ops     sync.Map // operation name -> *opOptions
	nops    atomic.Int64
}

// maxOps bounds the operation names whose options are kept; the options of
// further names are built at each event.
const maxOps = 1024

// opOptions are the measurement options of the events of one operation
// name, ready to be passed to the instruments.
type opOptions struct {
	// op carries txn.operation, or nothing for the unnamed operation.
	op []metric.AddOption
	// commit and giveUp carry txn.outcome and txn.operation.
	commit, giveUp []metric.RecordOption
	// wait carries txn.operation, for the admission histogram.
	wait []metric.RecordOption
}

func newOpOptions(name string) *opOptions {
	outcome := func(v string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(withOp(name, attribute.String("txn.outcome", v))...))
	}
	c, g := outcome("commit"), outcome("give_up")
	o := &opOptions{commit: []metric.RecordOption{c}, giveUp: []metric.RecordOption{g}}
	if name != "" {
		op := metric.WithAttributeSet(attribute.NewSet(opAttr(name)))
		o.op, o.wait = []metric.AddOption{op}, []metric.RecordOption{op}
	}
	return o
}

// options returns the options of operation name.
func (o *Observer) options(name string) *opOptions {
	if name == "" {
		return &o.unnamed
	}
	if v, ok := o.ops.Load(name); ok {
		return v.(*opOptions)
	}
	oo := newOpOptions(name)
	if o.nops.Load() >= maxOps {
		return oo
	}
	if v, loaded := o.ops.LoadOrStore(name, oo); loaded {
		return v.(*opOptions)
	}
	o.nops.Add(1)
	return oo
}

var _ txn.Observer = (*Observer)(nil)

// NewObserver creates the instruments and returns the Observer, or an error
// if an instrument cannot be created.
func NewObserver(opts ...Option) (*Observer, error) {
	s := settings{}
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	if s.mp == nil {
		s.mp = otel.GetMeterProvider()
	}
	m := s.mp.Meter(ScopeName)
	o := &Observer{unnamed: *newOpOptions("")}
	var err error
	if o.attempts, err = m.Int64Counter("txn.attempts", metric.WithDescription("Executions of fn."), metric.WithUnit("{attempt}")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.retries, err = m.Int64Counter("txn.retries", metric.WithDescription("Retries, by class of the error that caused them."), metric.WithUnit("{retry}")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.commits, err = m.Int64Counter("txn.commits", metric.WithDescription("Runs that committed."), metric.WithUnit("{run}")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.giveUps, err = m.Int64Counter("txn.give_ups", metric.WithDescription("Runs that returned an error."), metric.WithUnit("{run}")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.duration, err = m.Float64Histogram("txn.run.duration", metric.WithDescription("Time from the start of Run to its commit or give-up."), metric.WithUnit("s")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.perRun, err = m.Int64Histogram("txn.run.attempts", metric.WithDescription("Attempts per finished Run."), metric.WithUnit("{attempt}")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	if o.admission, err = m.Float64Histogram("txn.admission.wait", metric.WithDescription("Time an attempt waited for admission."), metric.WithUnit("s")); err != nil {
		return nil, fmt.Errorf("txnotel: %w", err)
	}
	return o, nil
}

func classAttr(c txn.Class) attribute.KeyValue { return attribute.String("txn.class", c.String()) }

// opAttr is the attribute naming the call's operation.
func opAttr(name string) attribute.KeyValue { return attribute.String("txn.operation", name) }

// withOp appends the operation attribute to attrs when the call has a name.
func withOp(name string, attrs ...attribute.KeyValue) []attribute.KeyValue {
	if name == "" {
		return attrs
	}
	return append(attrs, opAttr(name))
}

func errMessage(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// AttemptStarted counts the attempt.
func (o *Observer) AttemptStarted(ctx context.Context, e txn.AttemptEvent) {
	o.attempts.Add(ctx, 1, o.options(e.Operation).op...)
}

// RetryScheduled counts the retry and adds a "txn.retry" span event.
func (o *Observer) RetryScheduled(ctx context.Context, e txn.RetryEvent) {
	o.retries.Add(ctx, 1, metric.WithAttributes(withOp(e.Operation, classAttr(e.Class))...))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("txn.retry", trace.WithAttributes(withOp(e.Operation,
			attribute.Int("txn.attempt", e.Attempt),
			classAttr(e.Class),
			attribute.Float64("txn.delay_ms", float64(e.Delay.Microseconds())/1000),
			attribute.String("exception.message", errMessage(e.Err)),
		)...))
	}
}

// GaveUp counts the failed Run, records its duration and attempts, and adds
// a "txn.give_up" span event.
func (o *Observer) GaveUp(ctx context.Context, e txn.GiveUpEvent) {
	o.giveUps.Add(ctx, 1, metric.WithAttributes(withOp(e.Operation, classAttr(e.Class))...))
	out := o.options(e.Operation).giveUp
	o.duration.Record(ctx, e.Elapsed.Seconds(), out...)
	o.perRun.Record(ctx, int64(e.Attempts), out...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("txn.give_up", trace.WithAttributes(withOp(e.Operation,
			attribute.Int("txn.attempts", e.Attempts),
			classAttr(e.Class),
			attribute.String("exception.message", errMessage(e.Err)),
		)...))
	}
}

// Committed counts the commit, records the Run's duration and attempts, and
// adds a "txn.commit" span event.
func (o *Observer) Committed(ctx context.Context, e txn.CommitEvent) {
	opts := o.options(e.Operation)
	o.commits.Add(ctx, 1, opts.op...)
	o.duration.Record(ctx, e.Elapsed.Seconds(), opts.commit...)
	o.perRun.Record(ctx, int64(e.Attempts), opts.commit...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("txn.commit", trace.WithAttributes(withOp(e.Operation, attribute.Int("txn.attempts", e.Attempts))...))
	}
}

// Admitted records the admission wait and adds a "txn.admission_wait" span
// event.
func (o *Observer) Admitted(ctx context.Context, e txn.AdmissionEvent) {
	o.admission.Record(ctx, e.Wait.Seconds(), o.options(e.Operation).wait...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("txn.admission_wait", trace.WithAttributes(withOp(e.Operation,
			attribute.Float64("txn.wait_ms", float64(e.Wait.Microseconds())/1000),
			attribute.Int("txn.limit", e.Limit),
			attribute.Int("txn.queue", e.Queue),
		)...))
	}
}
