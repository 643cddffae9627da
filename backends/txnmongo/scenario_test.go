package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/backends/txnmongo/internal/mongotest"
)

// TestWriteConflictsThenSuccess: N scripted WriteConflicts (112,
// TransientTransactionError) on the update, then success. fn runs N+1
// times, each attempt in a new transaction of the same session, aborted
// before the backoff sleep, and the Runner sleeps between attempts.
func TestWriteConflictsThenSuccess(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		const n = 3
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
		e.failPoint(t, mongotest.FailPoint{
			Commands: []string{"update"}, Times: n,
			ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
		})
		clk := newClock()
		rec := &recorder{clk: clk}
		base := 10 * time.Millisecond
		r := txnmongo.New(e.client, txn.WithClock(clk), txn.Seed(1),
			txn.WithBackoff(txn.EqualJitter(base, time.Second)), txn.WithObserver(rec))
		acct := e.coll("acct")
		var calls int
		var lsid string
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			lsid = sessionID(sess)
			_, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
			return err
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if calls != n+1 {
			t.Fatalf("fn ran %d times, want %d", calls, n+1)
		}
		if v := intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"); v != 1 {
			t.Fatalf("v = %d, want 1", v)
		}
		// Backoff between attempts: N sleeps of equal jitter, each
		// reported before it happened, and each attempt started when the
		// previous sleep ended.
		sleeps := clk.Sleeps()
		if len(sleeps) != n {
			t.Fatalf("slept %v, want %d sleeps", sleeps, n)
		}
		if got := rec.retryClasses(); !slices.Equal(got, []txn.Class{txn.ClassRetryable, txn.ClassRetryable, txn.ClassRetryable}) {
			t.Fatalf("retry classes = %v", got)
		}
		at := rec.attempts[0]
		for i, d := range sleeps {
			ceiling := base << i
			if d < ceiling/2 || d > ceiling {
				t.Errorf("sleep %d = %v, want in [%v, %v]", i+1, d, ceiling/2, ceiling)
			}
			if rec.retries[i].Delay != d {
				t.Errorf("retry %d announced %v, slept %v", i+1, rec.retries[i].Delay, d)
			}
			if ce := commandError(t, rec.retries[i].Err); ce.Code != 112 {
				t.Errorf("retry %d after %v, want WriteConflict", i+1, rec.retries[i].Err)
			}
			at = at.Add(d)
			if !rec.attempts[i+1].Equal(at) {
				t.Errorf("attempt %d started at %v, want %v (after the sleep)", i+2, rec.attempts[i+1], at)
			}
		}
		checkCommands(t, e, lsid,
			"update#1 start", "abortTransaction#1",
			"update#2 start", "abortTransaction#2",
			"update#3 start", "abortTransaction#3",
			"update#4 start", "commitTransaction#4",
		)
	})
}

// TestCommitUnknownResultRetriesOnlyCommit: a commitTransaction failing
// with UnknownTransactionCommitResult is sent again for the same
// transaction; fn runs once and nothing is aborted.
func TestCommitUnknownResultRetriesOnlyCommit(t *testing.T) {
	t.Run("write concern error", func(t *testing.T) {
		// The commit applies but majority replication times out
		// (WriteConcernFailed 64): the driver labels it
		// UnknownTransactionCommitResult and does not retry it itself.
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{
				Commands: []string{"commitTransaction"}, Times: 1,
				WriteConcernError: &mongotest.WriteConcernError{Code: 64, Name: "WriteConcernFailed", Message: "waiting for replication timed out"},
			})
			cmds := commitRetried(t, e, 1, "insert#1 start", "commitTransaction#1", "commitTransaction#1")
			// The driver upgrades the write concern of a re-sent commit
			// to majority with a 10 s wtimeout.
			wc, _ := cmds[2].Body.Lookup("writeConcern").DocumentOK()
			if w, _ := wc.Lookup("w").StringValueOK(); w != "majority" {
				t.Errorf("re-sent commit write concern = %v, want w: majority", wc)
			}
			if ms, ok := wc.Lookup("wtimeout").AsInt64OK(); !ok || ms != 10000 {
				t.Errorf("re-sent commit write concern = %v, want wtimeout: 10000", wc)
			}
		})
	})
	t.Run("retryable error twice", func(t *testing.T) {
		// The primary is shutting down (91, RetryableWriteError) for the
		// commit and the driver's own retry of it; the driver then adds
		// UnknownTransactionCommitResult and the Runner re-sends it.
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{
				Commands: []string{"commitTransaction"}, Times: 2,
				ErrorCode: 91, ErrorLabels: []string{"RetryableWriteError"},
			})
			cmds := commitRetried(t, e, 1, "insert#1 start", "commitTransaction#1", "commitTransaction#1", "commitTransaction#1")
			if e.srv != nil && (cmds[1].Code != 91 || cmds[2].Code != 91 || cmds[3].Code != 0) {
				t.Fatalf("commit outcomes %d %d %d, want 91 91 ok", cmds[1].Code, cmds[2].Code, cmds[3].Code)
			}
		})
	})
}

// commitRetried runs an insert in a Run whose commit fails as scripted and
// checks that only the commit was re-sent, retries times by the Runner,
// and that the document exists once. It returns the session's commands.
func commitRetried(t *testing.T, e *env, retries int, want ...string) []cmd {
	t.Helper()
	rec := &recorder{}
	r := txnmongo.New(e.client, txn.WithClock(newClock()), txn.WithObserver(rec))
	var calls int
	var lsid string
	err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
		calls++
		lsid = sessionID(sess)
		_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": "x"})
		return err
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if calls != 1 {
		t.Fatalf("fn ran %d times, want 1", calls)
	}
	classes := rec.retryClasses()
	if len(classes) != retries {
		t.Fatalf("Runner retried %d times (%v), want %d", len(classes), classes, retries)
	}
	for _, c := range classes {
		if c != txn.ClassCommitRetryable {
			t.Fatalf("retry classes = %v, want commit-retryable", classes)
		}
	}
	if docs := e.find(t, "c", bson.M{}); len(docs) != 1 {
		t.Fatalf("documents = %v, want one", docs)
	}
	return checkCommands(t, e, lsid, want...)
}

// TestCommitMaxTimeMSExpiredNotRetried: a commit failing with
// MaxTimeMSExpired (50), even labelled UnknownTransactionCommitResult, is
// not sent again: its outcome is unknown, Run returns ErrCommitUnknown and
// fn runs once. The driver keeps such a transaction open on the client (it
// treats the error as a timeout), so ending the session sends
// abortTransaction; on a replica set that cannot undo a commit that
// happened and releases the locks of one that did not. An Idempotent call
// runs fn again instead.
func TestCommitMaxTimeMSExpiredNotRetried(t *testing.T) {
	script := mongotest.FailPoint{
		Commands: []string{"commitTransaction"}, Times: 1,
		ErrorCode: 50, ErrorLabels: []string{"UnknownTransactionCommitResult"},
	}
	t.Run("unknown outcome", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, script)
			rec := &recorder{}
			r := txnmongo.New(e.client, txn.WithClock(newClock()), txn.WithObserver(rec))
			var calls int
			var lsid string
			err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
				calls++
				lsid = sessionID(sess)
				_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": "x"})
				return err
			})
			if !errors.Is(err, txn.ErrCommitUnknown) {
				t.Fatalf("Run = %v, want ErrCommitUnknown", err)
			}
			var gu *txn.GiveUpError
			if !errors.As(err, &gu) || gu.Attempts != 1 {
				t.Fatalf("Run = %#v, want a GiveUpError after 1 attempt", err)
			}
			if ce := commandError(t, err); ce.Code != 50 || !ce.HasErrorLabel("UnknownTransactionCommitResult") {
				t.Fatalf("last error = %v", ce)
			}
			if calls != 1 || len(rec.retries) != 0 {
				t.Fatalf("fn ran %d times, %d retries; want 1 and 0", calls, len(rec.retries))
			}
			checkCommands(t, e, lsid, "insert#1 start", "commitTransaction#1", "abortTransaction#1")
			if e.srv != nil && e.srv.OpenTransactions() != 0 {
				t.Fatal("transaction left open on the server")
			}
		})
	})
	t.Run("idempotent call runs fn again", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, script)
			r := txnmongo.New(e.client, txn.WithClock(newClock()))
			var calls int
			var lsid string
			err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
				calls++
				lsid = sessionID(sess)
				_, err := e.coll("c").UpdateOne(ctx, bson.M{"_id": "x"}, bson.M{"$set": bson.M{"v": 1}}, options.UpdateOne().SetUpsert(true))
				return err
			}, txn.Idempotent())
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if calls != 2 {
				t.Fatalf("fn ran %d times, want 2", calls)
			}
			// The new attempt first aborts the transaction the timed-out
			// commit left open on the client.
			checkCommands(t, e, lsid, "update#1 start", "commitTransaction#1", "abortTransaction#1", "update#2 start", "commitTransaction#2")
			if docs := e.find(t, "c", bson.M{}); len(docs) != 1 {
				t.Fatalf("documents = %v", docs)
			}
		})
	})
}

// TestPermanentErrors: TransactionTooLargeForCache (388), labelled or not,
// and a genuine DuplicateKey (11000) are returned as they are after one
// attempt, and the transaction is aborted.
func TestPermanentErrors(t *testing.T) {
	check := func(t *testing.T, e *env, code int) {
		t.Helper()
		r := txnmongo.New(e.client, txn.WithClock(newClock()))
		var calls int
		var lsid string
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			lsid = sessionID(sess)
			_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1})
			return err
		})
		var se mongo.ServerError
		if !errors.As(err, &se) || !se.HasErrorCode(code) {
			t.Fatalf("Run = %v, want the server's error %d", err, code)
		}
		var gu *txn.GiveUpError
		if errors.As(err, &gu) {
			t.Fatalf("Run = %v: a permanent error must come back as it is", err)
		}
		if calls != 1 {
			t.Fatalf("fn ran %d times, want 1", calls)
		}
		checkCommands(t, e, lsid, "insert#1 start", "abortTransaction#1")
	}
	t.Run("388 TransactionTooLargeForCache", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{Commands: []string{"insert"}, Times: 1, ErrorCode: 388, ErrorLabels: []string{}})
			check(t, e, 388)
		})
	})
	t.Run("388 labelled by an old server", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{Commands: []string{"insert"}, Times: 1, ErrorCode: 388, ErrorLabels: []string{"TransientTransactionError"}})
			check(t, e, 388)
		})
	})
	t.Run("11000 DuplicateKey", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.insert(t, "c", bson.M{"_id": 1})
			check(t, e, 11000)
		})
	})
}

// TestSwallowedErrorStopsAtLimit: fn ignores the WriteConflict of its
// update and returns nil. The server has aborted the transaction, so every
// commit fails with NoSuchTransaction (251, TransientTransactionError);
// the Runner re-runs fn, never aborts after a failed commit, and stops at
// MaxAttempts with an error that says what happened.
func TestSwallowedErrorStopsAtLimit(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
		e.failPoint(t, mongotest.FailPoint{
			Commands: []string{"update"}, ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
		})
		rec := &recorder{}
		r := txnmongo.New(e.client, txn.MaxAttempts(3), txn.WithClock(newClock()), txn.WithObserver(rec))
		var calls int
		var lsid string
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			lsid = sessionID(sess)
			_, _ = e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
			return nil // the bug under test: the error is dropped
		})
		var gu *txn.GiveUpError
		if !errors.As(err, &gu) || !errors.Is(err, txn.ErrAttemptsExhausted) || gu.Attempts != 3 {
			t.Fatalf("Run = %v, want a GiveUpError for the attempt limit after 3 attempts", err)
		}
		if ce := commandError(t, err); ce.Code != 251 {
			t.Fatalf("last error = %v, want NoSuchTransaction", ce)
		}
		if errors.Is(err, txn.ErrCommitUnknown) {
			t.Fatalf("Run = %v: NoSuchTransaction is a definite outcome", err)
		}
		msg := err.Error()
		for _, want := range []string{
			"gave up after 3 attempts", "attempt limit reached",
			"the server had already aborted the transaction", "fn did not return its error",
			"NoSuchTransaction",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if calls != 3 {
			t.Fatalf("fn ran %d times, want 3", calls)
		}
		checkCommands(t, e, lsid,
			"update#1 start", "commitTransaction#1",
			"update#2 start", "commitTransaction#2",
			"update#3 start", "commitTransaction#3",
		)
		if v := intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"); v != 0 {
			t.Fatalf("v = %d, want 0", v)
		}
	})
}

// TestConnectionDroppedDuringCommit: the connection closes while
// commitTransaction is in flight. The driver labels that network error
// UnknownTransactionCommitResult (and NetworkError), never leaves it
// unlabelled, so Classify reports it commit-retryable: only the commit is
// sent again, which is safe because the server applies a transaction's
// commit once and answers a repeated one with its outcome. The outcome is
// ambiguous (txn.ErrCommitUnknown) only when the commit retries run out.
// In every case fn runs once and the increment is applied at most once.
func TestConnectionDroppedDuringCommit(t *testing.T) {
	cases := []struct {
		name      string
		fp        mongotest.FailPoint
		attempts  int
		retries   int // Runner-level commit retries
		commits   int // commitTransaction commands sent
		applied   int64
		ambiguous bool
	}{
		// The driver retries a commit once on a new connection by itself.
		{"before apply, once", mongotest.FailPoint{Times: 1, CloseConnection: true}, 0, 0, 2, 1, false},
		// The driver's retry fails too; the Runner sends it again.
		{"before apply, twice", mongotest.FailPoint{Times: 2, CloseConnection: true}, 0, 1, 3, 1, false},
		// The commit is applied each time and its reply lost; the Runner's
		// re-sent commit learns it committed.
		{"after apply, twice", mongotest.FailPoint{Times: 2, CloseConnectionAfterApply: true}, 0, 1, 3, 1, false},
		// The commit never gets through: after MaxAttempts commits (each
		// retried once by the driver) Run reports an unknown outcome.
		{"never gets through", mongotest.FailPoint{CloseConnection: true}, 3, 2, 6, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
				fp := tc.fp
				fp.Commands = []string{"commitTransaction"}
				e.failPoint(t, fp)
				rec := &recorder{}
				opts := []txn.RunnerOption{txn.WithClock(newClock()), txn.WithObserver(rec)}
				if tc.attempts > 0 {
					opts = append(opts, txn.MaxAttempts(tc.attempts))
				}
				r := txnmongo.New(e.client, opts...)
				var calls int
				var lsid string
				var id bson.Raw
				err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
					calls++
					lsid, id = sessionID(sess), slices.Clone(sess.ID())
					_, err := e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
					return err
				})
				if tc.ambiguous {
					// No commit got through: the transaction is still
					// open on the server, which would abort it after
					// transactionLifetimeLimitSeconds.
					defer e.killSession(t, id)
					if !errors.Is(err, txn.ErrCommitUnknown) || !errors.Is(err, txn.ErrAttemptsExhausted) {
						t.Fatalf("Run = %v, want ErrCommitUnknown after the attempt limit", err)
					}
					if !mongo.IsNetworkError(err) {
						t.Fatalf("Run = %v, want the network error wrapped", err)
					}
				} else if err != nil {
					t.Fatalf("Run: %v", err)
				}
				e.clearFailPoint(t)
				if calls != 1 {
					t.Fatalf("fn ran %d times, want 1", calls)
				}
				if len(rec.retries) != tc.retries {
					t.Fatalf("Runner retried %d times, want %d", len(rec.retries), tc.retries)
				}
				for _, ev := range rec.retries {
					var le mongo.LabeledError
					if ev.Class != txn.ClassCommitRetryable || !errors.As(ev.Err, &le) ||
						!le.HasErrorLabel("UnknownTransactionCommitResult") || !le.HasErrorLabel("NetworkError") {
						t.Fatalf("retry after %v (%v), want a commit-retryable network error labelled UnknownTransactionCommitResult", ev.Err, ev.Class)
					}
				}
				want := []string{"update#1 start"}
				for range tc.commits {
					want = append(want, "commitTransaction#1")
				}
				cmds := checkCommands(t, e, lsid, want...)
				if e.srv != nil {
					for i, c := range cmds[1:] {
						if hangup := i < fp.Times || fp.Times == 0; c.Hangup != hangup {
							t.Errorf("commit %d hangup = %v, want %v", i+1, c.Hangup, hangup)
						}
					}
				}
				if v := intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"); v != tc.applied {
					t.Fatalf("v = %d, want %d: the increment must be applied exactly once when Run succeeds", v, tc.applied)
				}
			})
		})
	}
}

// TestConcurrentUpdatesConflict: two goroutines read the same document in
// their transactions, meet at a barrier, then both write it. The second
// writer gets a genuine WriteConflict from the server and is run again;
// both read-modify-write updates are applied exactly once.
func TestConcurrentUpdatesConflict(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "c", bson.M{"_id": "k", "v": 0, "by": bson.A{}})
		rec := &recorder{}
		r := txnmongo.New(e.client, txn.WithBackoff(txn.FullJitter(time.Millisecond, 20*time.Millisecond)), txn.WithObserver(rec))
		ctx := e.ctx(t)
		coll := e.coll("c")
		bar := newBarrier(2)
		var calls [2]atomic.Int32
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
					attempt := calls[i].Add(1)
					var d bson.M
					if err := coll.FindOne(ctx, bson.M{"_id": "k"}).Decode(&d); err != nil {
						return err
					}
					if attempt == 1 {
						// Both transactions hold their snapshot before
						// either writes.
						if err := bar.wait(); err != nil {
							return txn.Permanent(err)
						}
					}
					v, _ := d["v"].(int32)
					_, err := coll.UpdateOne(ctx, bson.M{"_id": "k"},
						bson.M{"$set": bson.M{"v": v + 1}, "$push": bson.M{"by": int32(i)}})
					return err
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("goroutine %d: %v", i, err)
			}
		}
		conflicts := 0
		for _, ev := range rec.retries {
			if ce := commandError(t, ev.Err); ce.Code == 112 && ce.HasErrorLabel("TransientTransactionError") && ev.Class == txn.ClassRetryable {
				conflicts++
			}
		}
		if conflicts == 0 {
			t.Fatalf("no WriteConflict between the two transactions (retries %v)", rec.retries)
		}
		if n := calls[0].Load() + calls[1].Load(); n != int32(2+len(rec.retries)) {
			t.Fatalf("fn ran %d times for %d retries", n, len(rec.retries))
		}
		d := e.find(t, "c", bson.M{"_id": "k"})[0]
		by, _ := d["by"].(bson.A)
		if v := intField(t, d, "v"); v != 2 || len(by) != 2 || by[0] == by[1] {
			t.Fatalf("document = %v, want v 2 and one entry from each goroutine", d)
		}
		t.Logf("%s: %d conflicts", e.name, conflicts)
	})
}

// TestBankTransfersConserveTotal: 8 goroutines move money between 4
// accounts, each transfer a read-modify-write of two documents plus a
// ledger document. Conflicts are retried; the total is conserved, every
// balance matches the ledger, and the ledger has one entry per successful
// Run.
func TestBankTransfersConserveTotal(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		const (
			accounts   = 4
			workers    = 8
			perWorker  = 20
			initial    = 1000
			maxAttempt = 100
		)
		for i := range accounts {
			e.insert(t, "accounts", bson.M{"_id": int32(i), "balance": int64(initial)})
		}
		rec := &recorder{}
		r := txnmongo.New(e.client, txn.MaxAttempts(maxAttempt),
			txn.WithBackoff(txn.FullJitter(time.Millisecond, 50*time.Millisecond)), txn.WithObserver(rec))
		ctx := e.ctx(t)
		accts, ledger := e.coll("accounts"), e.coll("ledger")
		var ok atomic.Int64
		errs := make(chan error, workers*perWorker)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					from := int32((w + i) % accounts)
					to := int32((w + i + 1 + i%3) % accounts)
					if to == from {
						to = (to + 1) % accounts
					}
					amount := int64(1 + (w*7+i)%50)
					err := r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
						var a, b struct{ Balance int64 }
						if err := accts.FindOne(ctx, bson.M{"_id": from}).Decode(&a); err != nil {
							return err
						}
						if err := accts.FindOne(ctx, bson.M{"_id": to}).Decode(&b); err != nil {
							return err
						}
						if _, err := accts.UpdateOne(ctx, bson.M{"_id": from}, bson.M{"$set": bson.M{"balance": a.Balance - amount}}); err != nil {
							return err
						}
						if _, err := accts.UpdateOne(ctx, bson.M{"_id": to}, bson.M{"$set": bson.M{"balance": b.Balance + amount}}); err != nil {
							return err
						}
						_, err := ledger.InsertOne(ctx, bson.M{"_id": fmt.Sprintf("w%d-%d", w, i), "from": from, "to": to, "amount": amount})
						return err
					})
					if err != nil {
						errs <- fmt.Errorf("worker %d transfer %d: %w", w, i, err)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		want := make(map[int32]int64, accounts)
		for i := range accounts {
			want[int32(i)] = initial
		}
		entries := e.find(t, "ledger", bson.M{})
		for _, l := range entries {
			amt := intField(t, l, "amount")
			want[int32(intField(t, l, "from"))] -= amt
			want[int32(intField(t, l, "to"))] += amt
		}
		if int64(len(entries)) != ok.Load() {
			t.Fatalf("%d ledger entries for %d successful Runs", len(entries), ok.Load())
		}
		var total int64
		for _, d := range e.find(t, "accounts", bson.M{}) {
			bal := intField(t, d, "balance")
			total += bal
			if id := int32(intField(t, d, "_id")); bal != want[id] {
				t.Errorf("account %d balance %d, ledger says %d", id, bal, want[id])
			}
		}
		if total != accounts*initial {
			t.Fatalf("total %d, want %d", total, accounts*initial)
		}
		t.Logf("%s: %d transfers, %d retries", e.name, ok.Load(), len(rec.retries))
	})
}
