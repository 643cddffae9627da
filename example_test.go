package txn_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/txnkit/txn"
)

// memTx is the transaction handle of the toy backend used by these
// examples; with a real database it is pgx.Tx, *sql.Tx or a MongoDB session.
type memTx struct{ id int }

// memBackend is a toy backend whose first conflicts commits fail with a
// retryable error, like a serialization failure would.
type memBackend struct {
	conflicts int
	begun     int
}

var errSerialization = errors.New("could not serialize access")

func (b *memBackend) Begin(context.Context, []txn.BeginOption[*memTx]) (*memTx, error) {
	b.begun++
	return &memTx{id: b.begun}, nil
}

func (b *memBackend) Commit(context.Context, *memTx) error {
	if b.conflicts > 0 {
		b.conflicts--
		return errSerialization
	}
	return nil
}

func (b *memBackend) Rollback(context.Context, *memTx) error { return nil }

func (b *memBackend) Classify(err error) txn.Class {
	if errors.Is(err, errSerialization) {
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

func Example() {
	r := txn.New[*memTx](&memBackend{conflicts: 2}, txn.MaxAttempts(5))
	err := r.Run(context.Background(), func(ctx context.Context, tx *memTx) error {
		fmt.Println("attempt in transaction", tx.id)
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// attempt in transaction 1
	// attempt in transaction 2
	// attempt in transaction 3
	// err: <nil>
}

func ExampleDo() {
	r := txn.New[*memTx](&memBackend{conflicts: 1})
	id, err := txn.Do(context.Background(), r, func(ctx context.Context, tx *memTx) (int, error) {
		return tx.id * 100, nil // the value of the attempt that committed
	})
	fmt.Println(id, err)
	// Output: 200 <nil>
}

func ExampleOnCommit() {
	r := txn.New[*memTx](&memBackend{conflicts: 1})
	_ = r.Run(context.Background(), func(ctx context.Context, tx *memTx) error {
		n := tx.id
		// Registered in both attempts; only the committed one publishes.
		return txn.OnCommit(ctx, func() { fmt.Println("published after commit of transaction", n) })
	})
	// Output: published after commit of transaction 2
}

func ExampleRetry() {
	r := txn.New[*memTx](&memBackend{})
	version := 1
	err := r.Run(context.Background(), func(ctx context.Context, tx *memTx) error {
		if version == 1 { // an optimistic check failed: ask for a fresh attempt
			version++
			return txn.Retry(errors.New("row version changed"))
		}
		fmt.Println("saved in transaction", tx.id)
		return nil
	})
	fmt.Println(err)
	// Output:
	// saved in transaction 2
	// <nil>
}

func ExampleGiveUpError() {
	r := txn.New[*memTx](&memBackend{conflicts: 10}, txn.MaxAttempts(3), txn.WithBackoff(txn.Constant(time.Millisecond)))
	err := r.Run(context.Background(), func(ctx context.Context, tx *memTx) error { return nil })
	fmt.Println(errors.Is(err, txn.ErrAttemptsExhausted), errors.Is(err, errSerialization))
	var gu *txn.GiveUpError
	if errors.As(err, &gu) {
		fmt.Println("attempts:", gu.Attempts)
	}
	// Output:
	// true true
	// attempts: 3
}

func ExampleSlogObserver() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "delay" {
				return slog.Attr{} // keep the output stable
			}
			return a
		},
	}))
	r := txn.New[*memTx](&memBackend{conflicts: 1}, txn.WithObserver(txn.SlogObserver(logger)))
	_ = r.Run(context.Background(), func(ctx context.Context, tx *memTx) error { return nil })
	// Output:
	// level=INFO msg="txn retry" attempt=1 class=retryable error="could not serialize access"
}

func ExampleRetryBudget() {
	// One budget for every goroutine using r: retries add at most 10% to the
	// load, plus 5 per second, however badly the database is doing.
	r := txn.New[*memTx](&memBackend{}, txn.RetryBudget(0.1, 5))
	fmt.Println(r.Err())
	// Output: <nil>
}
