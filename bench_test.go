package txn_test

import (
	"context"
	"testing"

	"github.com/txnkit/txn"
)

// benchBackend is an allocation-free backend whose transactions are ints.
type benchBackend struct{}

type benchErr struct{}

func (benchErr) Error() string { return "conflict" }

func (b *benchBackend) Begin(context.Context, []txn.BeginOption[int]) (int, error) { return 1, nil }
func (b *benchBackend) Commit(context.Context, int) error                          { return nil }
func (b *benchBackend) Rollback(context.Context, int) error                        { return nil }
func (b *benchBackend) Classify(err error) txn.Class {
	if _, ok := err.(benchErr); ok {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// BenchmarkRunHappyPath measures one Run that commits at the first attempt,
// with no observer: the cost the library adds around fn.
func BenchmarkRunHappyPath(b *testing.B) {
	r := txn.New[int](&benchBackend{})
	ctx := context.Background()
	fn := func(ctx context.Context, tx int) error { return nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Run(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunHappyPathNoAdaptive is the happy path with the adaptive
// concurrency limit turned off, to show what the limit costs.
func BenchmarkRunHappyPathNoAdaptive(b *testing.B) {
	r := txn.New[int](&benchBackend{}, txn.NoAdaptive())
	ctx := context.Background()
	fn := func(ctx context.Context, tx int) error { return nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Run(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunHappyPathParallel is the happy path from all cores at once,
// which shows contention inside the Runner, if any.
func BenchmarkRunHappyPathParallel(b *testing.B) {
	r := txn.New[int](&benchBackend{})
	fn := func(ctx context.Context, tx int) error { return nil }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := r.Run(ctx, fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRunThreeAttempts measures a Run whose first two attempts fail
// with a retryable error, with zero backoff so that only the library's work
// (rollbacks, classification, backoff arithmetic) is timed.
func BenchmarkRunThreeAttempts(b *testing.B) {
	r := txn.New[int](&benchBackend{}, txn.WithBackoff(txn.Constant(0)))
	ctx := context.Background()
	var conflict error = benchErr{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		calls := 0
		err := r.Run(ctx, func(ctx context.Context, tx int) error {
			calls++
			if calls < 3 {
				return conflict
			}
			return nil
		})
		if err != nil || calls != 3 {
			b.Fatal(err, calls)
		}
	}
}

// BenchmarkDoHappyPath measures Do, which wraps fn to carry its result.
func BenchmarkDoHappyPath(b *testing.B) {
	r := txn.New[int](&benchBackend{})
	ctx := context.Background()
	fn := func(ctx context.Context, tx int) (int, error) { return tx, nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := txn.Do(ctx, r, fn); err != nil {
			b.Fatal(err)
		}
	}
}
