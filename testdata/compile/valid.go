// The same calls with options where they belong compile: the control that
// shows the other files fail for the reason under test.
package main

import (
	"context"

	"github.com/txnkit/txn"
)

func main() {
	var b txn.Backend[int]
	r := txn.New(b, txn.Adaptive(5), txn.RetryBudget(0.2, 10), txn.MaxAttempts(3))
	fn := func(context.Context, int) error { return nil }
	_ = r.Run(context.Background(), fn, txn.Keys("x"), txn.Idempotent(), txn.MaxAttempts(2))
	_, _ = txn.Do(context.Background(), r, func(context.Context, int) (int, error) { return 1, nil }, txn.Keys("y"))
}
