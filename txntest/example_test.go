package txntest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txntest"
)

// A side effect inside fn (a mail, an HTTP call, a queue message) happens
// once per attempt, including the attempts that roll back. Moved into
// txn.OnCommit it happens once, after the commit. In a test, call
// txntest.CheckRerun(t, r, fn, report, reset) instead of Rerun: it fails
// the test with the same message.
func Example_sideEffectInFn() {
	ctx := context.Background()
	db := newMemDB() // stands for your database; r for the Runner your application builds
	r := txn.New[*Tx](db)
	var receipts []string // stands for a mail service

	// Buggy: the receipt is sent by every attempt.
	buggy := func(ctx context.Context, tx *Tx) error {
		tx.Put("alice", tx.Get("alice")-10)
		receipts = append(receipts, "alice paid 10")
		return nil
	}
	// Fixed: the receipt is sent once the transaction has committed.
	fixed := func(ctx context.Context, tx *Tx) error {
		tx.Put("alice", tx.Get("alice")-10)
		return txn.OnCommit(ctx, func() { receipts = append(receipts, "alice paid 10") })
	}

	type state struct {
		Balance  int
		Receipts []string
	}
	report := func(context.Context) state { return state{db.Get("alice"), receipts} }
	reset := txntest.Reset(func(context.Context) error {
		db.Put("alice", 100)
		receipts = nil
		return nil
	})
	fmt.Println("buggy:", txntest.Rerun(ctx, r, buggy, report, reset))
	fmt.Println("fixed:", txntest.Rerun(ctx, r, fixed, report, reset))
	// Output:
	// buggy: txntest: not safe to re-run: after attempt 1 failed before COMMIT and attempt 2 committed, report returned {Balance:90 Receipts:[alice paid 10 alice paid 10]}; after a single attempt it returned {Balance:90 Receipts:[alice paid 10]}
	// fixed: <nil>
}

// A slice (or counter, or map) captured from outside fn keeps what earlier
// attempts put in it. Each attempt must start from scratch.
func Example_capturedSlice() {
	ctx := context.Background()
	db := newMemDB()
	r := txn.New[*Tx](db)
	var names []string // fn's result, read by the caller after Run

	// Buggy: the rows of a rolled-back attempt stay in names.
	buggy := func(ctx context.Context, tx *Tx) error {
		for _, k := range tx.Keys("item:") {
			names = append(names, k)
		}
		return nil
	}
	// Fixed: every attempt starts with an empty result (or return the
	// result from txn.Do, which keeps the committed attempt's).
	fixed := func(ctx context.Context, tx *Tx) error {
		names = nil
		for _, k := range tx.Keys("item:") {
			names = append(names, k)
		}
		return nil
	}

	report := func(context.Context) []string { return names }
	reset := txntest.Reset(func(context.Context) error {
		db.Clear()
		db.Put("item:apple", 1)
		db.Put("item:pear", 2)
		names = nil
		return nil
	})
	fmt.Println("buggy:", txntest.Rerun(ctx, r, buggy, report, reset))
	fmt.Println("fixed:", txntest.Rerun(ctx, r, fixed, report, reset))
	// Output:
	// buggy: txntest: not safe to re-run: after attempt 1 failed before COMMIT and attempt 2 committed, report returned [item:apple item:pear item:apple item:pear]; after a single attempt it returned [item:apple item:pear]
	// fixed: <nil>
}

// A value read before Run (or in the first attempt and kept) is stale when
// the retry runs: the retry exists because another transaction changed the
// data. txntest.Meanwhile commits that other transaction between the
// forced failure and the retry; a correct call ends as if it had run after
// it. Read inside fn, in the same transaction as the write. CheckCall (and
// RerunCall) check the code around Run too.
func Example_valueComputedOutsideTheRetry() {
	ctx := context.Background()
	db := newMemDB()
	r := txn.New[*Tx](db)

	// Buggy: the balance is read once, outside the transaction, and every
	// attempt writes a total computed from it.
	withdrawBuggy := func(ctx context.Context, r *txn.Runner[*Tx], amount int) error {
		balance := db.Get("alice")
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
			tx.Put("alice", balance-amount)
			return nil
		})
	}
	// Fixed: the balance is read inside fn, by every attempt.
	withdraw := func(ctx context.Context, r *txn.Runner[*Tx], amount int) error {
		return r.Run(ctx, func(ctx context.Context, tx *Tx) error {
			tx.Put("alice", tx.Get("alice")-amount)
			return nil
		})
	}

	report := func(context.Context) int { return db.Get("alice") }
	reset := txntest.Reset(func(context.Context) error { db.Put("alice", 100); return nil })
	deposit := txntest.Meanwhile(func(context.Context) error { db.Put("alice", db.Get("alice")+50); return nil })
	fmt.Println("buggy:", txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
		return withdrawBuggy(ctx, r, 10)
	}, report, reset, deposit))
	fmt.Println("fixed:", txntest.RerunCall(ctx, r, func(ctx context.Context, r *txn.Runner[*Tx]) error {
		return withdraw(ctx, r, 10)
	}, report, reset, deposit))
	// Output:
	// buggy: txntest: not safe to re-run: after attempt 1 failed before COMMIT, another transaction (Meanwhile) committed, and attempt 2 committed, report returned 90; after a single attempt it returned 140
	// fixed: <nil>
}

// Fail makes chosen attempts of every Run of a Runner view fail at chosen
// points; a Recorder shows what Run did about it.
func ExampleFail() {
	ctx := context.Background()
	db := newMemDB()
	r := txn.New[*Tx](db) // the Runner your application builds

	faults := txntest.Fail(txn.InterceptBeforeCommit, 1).Fail(txn.InterceptCommit, 2)
	faulty := r.WithInterceptor(faults) // same type, same backend, same database
	rec := &txntest.Recorder{}
	calls := 0
	err := faulty.Run(ctx, func(ctx context.Context, tx *Tx) error {
		calls++
		tx.Put("visits", tx.Get("visits")+1)
		return nil
	}, txn.WithObserver(rec))
	fmt.Println(err, calls, db.Get("visits"))
	fmt.Println(rec)
	fmt.Println(faults.Injected())
	// Output:
	// <nil> 3 1
	// attempt 1, retry retryable, attempt 2, retry retryable, attempt 3, committed
	// [attempt 1 failed before COMMIT attempt 2 failed at COMMIT]
}

// A fault after the COMMIT stands for a reply lost on the way back: the
// work is committed but Run cannot know it. Run reports ErrCommitUnknown,
// and runs fn again only for a call declared Idempotent.
func ExampleFail_unknownOutcome() {
	ctx := context.Background()
	db := newMemDB()
	faulty := txn.New[*Tx](db).WithInterceptor(txntest.Fail(txn.InterceptAfterCommit, 1))
	setTo7 := func(ctx context.Context, tx *Tx) error {
		tx.Put("answer", 7)
		return nil
	}
	err := faulty.Run(ctx, setTo7)
	fmt.Println(errors.Is(err, txn.ErrCommitUnknown), db.Get("answer"))
	err = faulty.Run(ctx, setTo7, txn.Idempotent())
	fmt.Println(err)
	// Output:
	// true 7
	// <nil>
}
