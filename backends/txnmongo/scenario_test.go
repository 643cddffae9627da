package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/mongotest"
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
		require.NoError(t, err)
		require.EqualValues(t, n+1, calls, "fn ran %d times, want %d", calls, n+1)
		v := intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v")
		require.EqualValues(t, 1, v, "v = %d, want 1", v)
		// Backoff between attempts: N sleeps of equal jitter, each
		// reported before it happened, and each attempt started when the
		// previous sleep ended.
		sleeps := clk.Sleeps()
		require.EqualValues(t, n, len(sleeps), "slept %v, want %d sleeps", sleeps, n)
		got := rec.retryClasses()
		require.Equal(t, []txn.Class{txn.ClassRetryable, txn.ClassRetryable, txn.ClassRetryable}, got, "retry classes")
		at := rec.attempts[0]
		for i, d := range sleeps {
			ceiling := base << i
			assert.GreaterOrEqual(t, d, ceiling/2, "sleep %d", i+1)
			assert.LessOrEqual(t, d, ceiling, "sleep %d", i+1)
			assert.EqualValues(t, d, rec.retries[i].Delay, "retry %d announced %v, slept %v", i+1, rec.retries[i].Delay, d)
			ce := commandError(t, rec.retries[i].Err)
			assert.EqualValues(t, 112, ce.Code, "retry %d after %v, want WriteConflict", i+1, rec.retries[i].Err)
			at = at.Add(d)
			assert.True(t, rec.attempts[i+1].Equal(at), "attempt %d started at %v, want %v (after the sleep)", i+2, rec.attempts[i+1], at)
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
			w, _ := wc.Lookup("w").StringValueOK()
			assert.EqualValues(t, "majority", w, "re-sent commit write concern = %v, want w: majority", wc)
			ms, ok := wc.Lookup("wtimeout").AsInt64OK()
			assert.True(t, ok, "re-sent commit write concern = %v, want a wtimeout", wc)
			assert.EqualValues(t, 10000, ms, "re-sent commit wtimeout")
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
			if e.srv != nil {
				require.Equal(t, []int32{91, 91, 0}, []int32{cmds[1].Code, cmds[2].Code, cmds[3].Code}, "commit outcomes")
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
	require.NoError(t, err)
	require.Equal(t, 1, calls, "fn runs")
	classes := rec.retryClasses()
	require.EqualValues(t, retries, len(classes), "Runner retried %d times (%v), want %d", len(classes), classes, retries)
	for _, c := range classes {
		require.EqualValues(t, txn.ClassCommitRetryable, c, "retry classes = %v, want commit-retryable", classes)
	}
	docs := e.find(t, "c", bson.M{})
	require.Len(t, docs, 1)
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
			require.ErrorIs(t, err, txn.ErrCommitUnknown, "Run = %v, want ErrCommitUnknown", err)
			var gu *txn.GiveUpError
			require.ErrorAs(t, err, &gu)
			require.EqualValues(t, 1, gu.Attempts, "Run = %#v, want a GiveUpError after 1 attempt", err)
			ce := commandError(t, err)
			require.EqualValues(t, 50, ce.Code, "last error = %v", ce)
			require.True(t, ce.HasErrorLabel("UnknownTransactionCommitResult"), "last error = %v", ce)
			require.Equal(t, 1, calls, "fn runs")
			require.Empty(t, rec.retries)
			checkCommands(t, e, lsid, "insert#1 start", "commitTransaction#1", "abortTransaction#1")
			require.False(t, e.srv != nil && e.srv.OpenTransactions() != 0, "transaction left open on the server")
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
			require.NoError(t, err)
			require.Equal(t, 2, calls, "fn runs")
			// The new attempt first aborts the transaction the timed-out
			// commit left open on the client.
			checkCommands(t, e, lsid, "update#1 start", "commitTransaction#1", "abortTransaction#1", "update#2 start", "commitTransaction#2")
			docs := e.find(t, "c", bson.M{})
			require.Len(t, docs, 1)
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
		require.ErrorAs(t, err, &se)
		require.True(t, se.HasErrorCode(code), "Run = %v, want the server's error %d", err, code)
		var gu *txn.GiveUpError
		require.False(t, errors.As(err, &gu), "Run = %v: a permanent error must come back as it is", err)
		require.Equal(t, 1, calls, "fn runs")
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

// TestSwallowedErrorStopsAtLimit: fn drops the error of a statement that
// failed for real and returns nil. The server aborted the transaction when
// the statement failed, so every commit fails with NoSuchTransaction (251,
// TransientTransactionError); the Runner re-runs fn, never aborts after a
// failed commit, and stops at MaxAttempts with an error that says what
// happened. The failures: a genuine DuplicateKey on the second statement
// (the server aborts the open transaction), and a fail point on the first
// statement (mongod evaluates it before the session, so the transaction
// is never started and its commit finds none).
func TestSwallowedErrorStopsAtLimit(t *testing.T) {
	cases := []struct {
		name     string
		failFrom func(t *testing.T, e *env)
		fn       func(ctx context.Context, e *env) error
		want     []string // the commands of one attempt, n standing for its transaction
	}{
		{
			name:     "genuine DuplicateKey on the second statement",
			failFrom: func(t *testing.T, e *env) { e.insert(t, "acct", bson.M{"_id": "dup"}) },
			fn: func(ctx context.Context, e *env) error {
				if _, err := e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
					return err
				}
				_, _ = e.coll("acct").InsertOne(ctx, bson.M{"_id": "dup"})
				return nil // the bug under test: the error is dropped
			},
			want: []string{"update#%d start", "insert#%d", "commitTransaction#%d"},
		},
		{
			name: "fail point on the first statement",
			failFrom: func(t *testing.T, e *env) {
				e.failPoint(t, mongotest.FailPoint{
					Commands: []string{"update"}, ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
				})
			},
			fn: func(ctx context.Context, e *env) error {
				_, _ = e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
				return nil // the bug under test: the error is dropped
			},
			want: []string{"update#%d start", "commitTransaction#%d"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
				tc.failFrom(t, e)
				rec := &recorder{}
				r := txnmongo.New(e.client, txn.MaxAttempts(3), txn.WithClock(newClock()), txn.WithObserver(rec))
				var calls int
				var lsid string
				err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
					calls++
					lsid = sessionID(sess)
					return tc.fn(ctx, e)
				})
				var gu *txn.GiveUpError
				require.ErrorAs(t, err, &gu)
				require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
				assert.Equal(t, 3, gu.Attempts)
				assert.EqualValues(t, 251, commandError(t, err).Code, "the last error is NoSuchTransaction")
				assert.NotErrorIs(t, err, txn.ErrCommitUnknown, "NoSuchTransaction is a definite outcome")
				for _, want := range []string{
					"gave up after 3 attempts", "attempt limit reached",
					"the server had already aborted the transaction", "fn did not return its error",
					"NoSuchTransaction",
				} {
					assert.Contains(t, err.Error(), want)
				}
				assert.Equal(t, 3, calls)
				var want []string
				for n := 1; n <= 3; n++ {
					for _, w := range tc.want {
						want = append(want, fmt.Sprintf(w, n))
					}
				}
				checkCommands(t, e, lsid, want...)
				assert.EqualValues(t, 0, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"))
			})
		})
	}
}

// TestSwallowedInjectedErrorCommitsPartialTransaction: fn's second
// statement is failed by a fail point, fn drops the error and returns nil.
// mongod evaluates failCommand before it checks out the session, so the
// transaction is untouched and its commit succeeds with the first
// statement only: a partial transaction, which is why fn must return
// every error. (Before mongotest matched mongod here, the commit failed
// with NoSuchTransaction.)
func TestSwallowedInjectedErrorCommitsPartialTransaction(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
		e.failPoint(t, mongotest.FailPoint{
			Commands: []string{"update"}, ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
		})
		r := txnmongo.New(e.client, txn.WithClock(newClock()))
		calls := 0
		var lsid string
		var updateErr error
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			lsid = sessionID(sess)
			if _, err := e.coll("log").InsertOne(ctx, bson.M{"_id": "first statement"}); err != nil {
				return err
			}
			_, updateErr = e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
			return nil // the bug under test: the error is dropped
		})
		require.NoError(t, err, "the transaction is still open on the server: the commit succeeds")
		assert.Equal(t, 1, calls)
		assert.EqualValues(t, 112, commandError(t, updateErr).Code)
		checkCommands(t, e, lsid, "insert#1 start", "update#1", "commitTransaction#1")
		assert.Len(t, e.find(t, "log", bson.M{}), 1, "the first statement was committed")
		assert.EqualValues(t, 0, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"), "the failed statement was not")
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
					require.ErrorIs(t, err, txn.ErrCommitUnknown)
					require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
					require.True(t, mongo.IsNetworkError(err), "Run = %v, want the network error wrapped", err)
				} else {
					require.NoError(t, err)
				}
				e.clearFailPoint(t)
				require.Equal(t, 1, calls, "fn runs")
				require.EqualValues(t, tc.retries, len(rec.retries), "Runner retried %d times, want %d", len(rec.retries), tc.retries)
				for _, ev := range rec.retries {
					var le mongo.LabeledError
					require.Equal(t, txn.ClassCommitRetryable, ev.Class)
					require.ErrorAs(t, ev.Err, &le)
					require.True(t, le.HasErrorLabel("UnknownTransactionCommitResult") && le.HasErrorLabel("NetworkError"),
						"retry after %v, want a network error labelled UnknownTransactionCommitResult", ev.Err)
				}
				want := []string{"update#1 start"}
				for range tc.commits {
					want = append(want, "commitTransaction#1")
				}
				cmds := checkCommands(t, e, lsid, want...)
				if e.srv != nil {
					for i, c := range cmds[1:] {
						hangup := i < fp.Times || fp.Times == 0
						assert.EqualValues(t, hangup, c.Hangup, "commit %d hangup = %v, want %v", i+1, c.Hangup, hangup)
					}
				}
				v := intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v")
				require.EqualValues(t, tc.applied, v, "v = %d, want %d: the increment must be applied exactly once when Run succeeds", v, tc.applied)
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
		bar := integrationtest.NewBarrier(2)
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
						if err := bar.WaitFor(waitLimit); err != nil {
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
			require.NoError(t, err, "goroutine %d", i)
		}
		conflicts := 0
		for _, ev := range rec.retries {
			if ce := commandError(t, ev.Err); ce.Code == 112 && ce.HasErrorLabel("TransientTransactionError") && ev.Class == txn.ClassRetryable {
				conflicts++
			}
		}
		require.NotEqual(t, 0, conflicts, "no WriteConflict between the two transactions (retries %v)", rec.retries)
		n := calls[0].Load() + calls[1].Load()
		require.EqualValues(t, int32(2+len(rec.retries)), n, "fn ran %d times for %d retries", n, len(rec.retries))
		d := e.find(t, "c", bson.M{"_id": "k"})[0]
		by, _ := d["by"].(bson.A)
		v := intField(t, d, "v")
		require.EqualValues(t, 2, v, "document = %v", d)
		require.Len(t, by, 2, "document = %v", d)
		require.NotEqual(t, by[0], by[1], "one entry from each goroutine: %v", d)
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
			assert.NoError(t, err)
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
		require.EqualValues(t, ok.Load(), int64(len(entries)), "%d ledger entries for %d successful Runs", len(entries), ok.Load())
		var total int64
		for _, d := range e.find(t, "accounts", bson.M{}) {
			bal := intField(t, d, "balance")
			total += bal
			id := int32(intField(t, d, "_id"))
			assert.EqualValues(t, want[id], bal, "account %d balance %d, ledger says %d", id, bal, want[id])
		}
		require.EqualValues(t, accounts*initial, total, "total %d, want %d", total, accounts*initial)
		t.Logf("%s: %d transfers, %d retries", e.name, ok.Load(), len(rec.retries))
	})
}
