package txnmongo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/session"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/internal/mongotest"
)

// TestNestedRunJoinsOuterTransaction: a Run nested in fn uses the outer
// session and transaction (MongoDB has no savepoints); a retryable error
// inside it restarts the whole transaction even when the outer fn drops
// it.
func TestNestedRunJoinsOuterTransaction(t *testing.T) {
	upsert := options.UpdateOne().SetUpsert(true)
	t.Run("joins", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			r := txnmongo.New(e.client, txn.WithClock(newClock()))
			coll := e.coll("c")
			var lsid string
			err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
				lsid = sessionID(sess)
				if _, err := coll.InsertOne(ctx, bson.M{"_id": "a"}); err != nil {
					return err
				}
				return r.Run(ctx, func(ctx context.Context, inner *mongo.Session) error {
					if inner != sess {
						return errors.New("nested Run got another session")
					}
					_, err := coll.UpdateOne(ctx, bson.M{"_id": "b"}, bson.M{"$set": bson.M{"v": 1}}, upsert)
					return err
				})
			})
			require.NoError(t, err)
			checkCommands(t, e, lsid, "insert#1 start", "update#1", "commitTransaction#1")
			docs := e.find(t, "c", bson.M{})
			require.Len(t, docs, 2)
		})
	})
	t.Run("retryable error restarts the outer transaction", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{
				Commands: []string{"update"}, Times: 1,
				ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
			})
			r := txnmongo.New(e.client, txn.WithClock(newClock()))
			coll := e.coll("c")
			var outer, inner int
			var lsid string
			err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
				outer++
				lsid = sessionID(sess)
				if _, err := coll.InsertOne(ctx, bson.M{"_id": "a"}); err != nil {
					return err
				}
				_ = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
					inner++
					_, err := coll.UpdateOne(ctx, bson.M{"_id": "b"}, bson.M{"$set": bson.M{"v": 1}}, upsert)
					return err
				})
				return nil // drops the nested error
			})
			require.NoError(t, err)
			require.Equal(t, 2, outer, "outer fn runs")
			require.Equal(t, 2, inner, "inner fn runs")
			checkCommands(t, e, lsid,
				"insert#1 start", "update#1", "abortTransaction#1",
				"insert#2 start", "update#2", "commitTransaction#2")
			docs := e.find(t, "c", bson.M{})
			require.Len(t, docs, 2)
		})
	})
}

// TestSavepointUnsupported: txn.Savepoint returns ErrSavepointUnsupported
// without running its function, and the transaction goes on.
func TestSavepointUnsupported(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client)
		called := false
		var spErr error
		err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
			if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
				return err
			}
			spErr = txn.Savepoint(ctx, func(context.Context, *mongo.Session) error {
				called = true
				return nil
			})
			return nil
		})
		require.NoError(t, err)
		require.ErrorIs(t, spErr, txn.ErrSavepointUnsupported)
		require.False(t, called, "Savepoint must not call its function")
		docs := e.find(t, "c", bson.M{})
		require.Len(t, docs, 1)
	})
}

// TestTxOptions: the defaults (primary, majority) override the client's,
// Runner options add to them, per-call options replace the Runner's, and
// the options reach the server.
func TestTxOptions(t *testing.T) {
	// run runs a find and an insert on client's collection and returns
	// the commands of the Run's session.
	run := func(t *testing.T, e *env, client *mongo.Client, r *txnmongo.Runner) ([]cmd, error) {
		t.Helper()
		e.resetCommands()
		coll := client.Database(e.db).Collection("c")
		var lsid string
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			lsid = sessionID(sess)
			if err := coll.FindOne(ctx, bson.M{}).Err(); err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
				return err
			}
			_, err := coll.InsertOne(ctx, bson.M{})
			return err
		})
		return e.commands(lsid), err
	}
	readLevel := func(c cmd) string {
		s, _ := c.Body.Lookup("readConcern", "level").StringValueOK()
		return s
	}
	writeW := func(c cmd) any {
		v := c.Body.Lookup("writeConcern", "w")
		if s, ok := v.StringValueOK(); ok {
			return s
		}
		if n, ok := v.AsInt64OK(); ok {
			return n
		}
		return nil
	}
	eachServer(t, func(t *testing.T, e *env) {
		t.Run("defaults override the client's", func(t *testing.T) {
			// Without the default, the client's read preference would
			// make the driver refuse the find ("read preference in a
			// transaction must be primary") and its w:1 would reach the
			// commit.
			client := e.newClient(t, options.Client().
				SetReadPreference(readpref.PrimaryPreferred()).
				SetWriteConcern(writeconcern.W1()))
			cmds, err := run(t, e, client, txnmongo.New(client))
			require.NoError(t, err)
			got := summary(cmds)
			require.Len(t, got, 3)
			require.Equal(t, "commitTransaction", cmds[2].Name, "commands = %q", got)
			w := writeW(cmds[2])
			require.EqualValues(t, "majority", w, "commit write concern w = %v, want majority", w)
		})
		t.Run("Runner options", func(t *testing.T) {
			r := txnmongo.New(e.client).WithBegin(txnmongo.TxOptions(options.Transaction().SetReadConcern(readconcern.Snapshot())))
			cmds, err := run(t, e, e.client, r)
			require.NoError(t, err)
			lvl := readLevel(cmds[0])
			require.EqualValues(t, "snapshot", lvl, "read concern = %q, want snapshot", lvl)
			w := writeW(cmds[2])
			require.EqualValues(t, "majority", w, "commit write concern w = %v, want the default majority", w)
		})
		t.Run("a view replaces the Runner's", func(t *testing.T) {
			r := txnmongo.New(e.client).WithBegin(txnmongo.TxOptions(options.Transaction().SetReadConcern(readconcern.Snapshot())))
			cmds, err := run(t, e, e.client, r.WithBegin(txnmongo.TxOptions(options.Transaction().
				SetReadConcern(readconcern.Majority()).SetWriteConcern(writeconcern.W1()))))
			require.NoError(t, err)
			lvl := readLevel(cmds[0])
			require.EqualValues(t, "majority", lvl, "read concern = %q, want majority", lvl)
			w := writeW(cmds[2])
			require.EqualValues(t, int64(1), w, "commit write concern w = %v, want 1", w)
		})
		t.Run("view read preference", func(t *testing.T) {
			// The driver refuses reads with a non-primary read preference
			// in a transaction, before sending them.
			rec := &recorder{}
			r := txnmongo.New(e.client, txn.WithObserver(rec))
			cmds, err := run(t, e, e.client, r.WithBegin(txnmongo.TxOptions(options.Transaction().SetReadPreference(readpref.PrimaryPreferred()))))
			require.ErrorContains(t, err, "read preference in a transaction must be primary")
			require.Len(t, rec.attempts, 1, "the refusal is not retried")
			// The refused find never reached the server; the driver had
			// already counted the transaction as started, so the
			// Runner's rollback sends abortTransaction.
			got := summary(cmds)
			require.Equal(t, []string{"abortTransaction#1"}, got, "only the abort")
		})
		t.Run("foreign begin options", func(t *testing.T) {
			r := txnmongo.New(e.client)
			called := false
			err := r.WithBegin(txn.NewBeginOption[*mongo.Session]("other", 42)).Run(e.ctx(t), func(context.Context, *mongo.Session) error {
				called = true
				return nil
			})
			require.ErrorIs(t, err, txn.ErrBadOption)
			require.False(t, called, "fn must not run")
		})
	})
}

// TestFnFinishesTransaction: fn must not commit, abort or end the
// session; Run reports it with ErrFnFinishedTx and does not retry.
func TestFnFinishesTransaction(t *testing.T) {
	cases := map[string]func(ctx context.Context, sess *mongo.Session) error{
		"commit": func(ctx context.Context, sess *mongo.Session) error { return sess.CommitTransaction(ctx) },
		"abort":  func(ctx context.Context, sess *mongo.Session) error { return sess.AbortTransaction(ctx) },
		"end session": func(ctx context.Context, sess *mongo.Session) error {
			sess.EndSession(ctx)
			return nil
		},
	}
	for name, finish := range cases {
		t.Run(name, func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				r := txnmongo.New(e.client)
				calls := 0
				err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
					calls++
					if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
						return err
					}
					return finish(ctx, sess)
				})
				require.ErrorIs(t, err, txn.ErrFnFinishedTx)
				require.Equal(t, 1, calls, "fn runs")
				n := e.client.NumberSessionsInProgress()
				require.EqualValues(t, 0, n, "%d sessions in progress after Run", n)
			})
		})
	}
}

// TestAbortSurvivesCallerCancellation: fn fails after the caller's context
// was cancelled; abortTransaction is still sent, on a context the
// cancellation does not reach, and succeeds.
func TestAbortSurvivesCallerCancellation(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client)
		ctx, cancel := context.WithCancel(e.ctx(t))
		defer cancel()
		boom := errors.New("fn failed")
		var lsid string
		err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
			lsid = sessionID(sess)
			if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
				return err
			}
			cancel()
			return boom
		})
		require.ErrorIs(t, err, boom, "Run = %v, want fn's error", err)
		cmds := checkCommands(t, e, lsid, "insert#1 start", "abortTransaction#1")
		require.False(t, cmds[1].Failed, "abortTransaction failed: %+v", cmds[1])
		require.False(t, e.srv != nil && e.srv.OpenTransactions() != 0, "transaction left open")
		docs := e.find(t, "c", bson.M{})
		require.Len(t, docs, 0)
	})
}

// TestCommitAfterCancellation: the caller's context ends after fn
// succeeded but before the commit was sent. Nothing is committed: the
// transaction is aborted at once rather than left to hold its locks on the
// server, and Run returns the context's error, not an unknown outcome.
func TestCommitAfterCancellation(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client)
		ctx, cancel := context.WithCancel(e.ctx(t))
		defer cancel()
		var lsid string
		err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
			lsid = sessionID(sess)
			if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
				return err
			}
			cancel()
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, txn.ErrCommitUnknown, "nothing was committed: the outcome is known")
		cmds := checkCommands(t, e, lsid, "insert#1 start", "abortTransaction#1")
		require.False(t, cmds[1].Failed, "abortTransaction failed: %+v", cmds[1])
		require.False(t, e.srv != nil && e.srv.OpenTransactions() != 0, "transaction left open")
		docs := e.find(t, "c", bson.M{})
		require.Len(t, docs, 0)
	})
}

// TestSessionPerAttempt: each attempt of an outermost Run holds a session
// of its own (a nested Run adds none), which an attempt that does not
// commit ends before the next begins, and none is left once Run returned,
// whatever the outcome: success, a permanent error, retries exhausted, a
// panic.
func TestSessionPerAttempt(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client, txn.MaxAttempts(2), txn.WithClock(newClock()))
		inUse := func(t *testing.T) {
			t.Helper()
			n := e.client.NumberSessionsInProgress()
			require.EqualValues(t, 1, n, "%d sessions in progress inside fn, want 1", n)
		}
		ended := func(t *testing.T, what string) {
			t.Helper()
			n := e.client.NumberSessionsInProgress()
			require.EqualValues(t, 0, n, "after %s: %d sessions in progress, want 0", what, n)
		}
		ctx := e.ctx(t)
		err := r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
			inUse(t)
			return r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
				inUse(t)
				_, err := e.coll("c").InsertOne(ctx, bson.M{})
				return err
			})
		})
		require.NoError(t, err)
		ended(t, "success")

		_ = r.Run(ctx, func(context.Context, *mongo.Session) error { return errors.New("permanent") })
		ended(t, "a permanent error")

		var sessions []*mongo.Session
		err = r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
			inUse(t)
			sessions = append(sessions, sess)
			if len(sessions) == 2 {
				_, err := e.coll("c").InsertOne(mongo.NewSessionContext(ctx, sessions[0]), bson.M{})
				require.ErrorIs(t, err, session.ErrSessionEnded, "the first attempt's session")
			}
			return txn.Retry(errors.New("again"))
		})
		require.ErrorIs(t, err, txn.ErrAttemptsExhausted)
		require.Len(t, sessions, 2)
		require.NotSame(t, sessions[0], sessions[1], "each attempt has a session of its own")
		ended(t, "retries exhausted")

		func() {
			defer func() {
				p := recover()
				require.EqualValues(t, "boom", p, "recovered %v, want the panic of fn", p)
			}()
			_ = r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
				if _, err := e.coll("c").InsertOne(ctx, bson.M{}); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		ended(t, "a panic")
		require.False(t, e.srv != nil && e.srv.OpenTransactions() != 0, "the panicking Run left its transaction open")
	})
}

// TestCommitIgnoresDeadline: under a context with a deadline the driver
// alone would re-send a failing commit until the deadline (see
// mongotest's TestDriverRetriesCommitUntilDeadline), hiding it from the
// Runner. Commit removes the deadline, so the driver retries once and the
// Runner's own commit retry is observed; Run still stops at the deadline.
func TestCommitIgnoresDeadline(t *testing.T) {
	t.Run("driver retries once", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			e.failPoint(t, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 3, CloseConnection: true})
			rec := &recorder{}
			r := txnmongo.New(e.client, txn.WithObserver(rec), txn.WithBackoff(txn.Constant(time.Millisecond)))
			ctx, cancel := context.WithTimeout(e.ctx(t), waitLimit)
			defer cancel()
			var lsid string
			err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
				lsid = sessionID(sess)
				_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1})
				return err
			})
			require.NoError(t, err)
			got := rec.retryClasses()
			require.Equal(t, []txn.Class{txn.ClassCommitRetryable}, got, "one commit retry by the Runner")
			checkCommands(t, e, lsid, "insert#1 start",
				"commitTransaction#1", "commitTransaction#1", // the driver: the commit and its retry
				"commitTransaction#1", "commitTransaction#1") // the Runner's retry, and the driver's
		})
	})
	t.Run("deadline still ends the commit", func(t *testing.T) {
		eachServer(t, func(t *testing.T, e *env) {
			// The commit is blocked ten times the deadline, and the
			// insert becomes visible only when the commit ends.
			e.failPoint(t, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 1, BlockTime: 2 * time.Second})
			r := txnmongo.New(e.client)
			ctx, cancel := context.WithTimeout(e.ctx(t), 200*time.Millisecond)
			defer cancel()
			err := r.Run(ctx, func(ctx context.Context, _ *mongo.Session) error {
				_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1})
				return err
			})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, txn.ErrCommitUnknown)
			// Not a duration: an order. Had Run waited for the blocked
			// commit to end, the insert would be visible by now.
			require.Empty(t, e.find(t, "c", bson.M{}), "Run returned when the blocked commit ended, not at the deadline")
		})
	})
}

// TestOnCommitRunsOnceAfterRetries: callbacks registered by attempts that
// lost a conflict never run; the committed attempt's run once.
func TestOnCommitRunsOnceAfterRetries(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.failPoint(t, mongotest.FailPoint{
			Commands: []string{"insert"}, Times: 2,
			ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
		})
		r := txnmongo.New(e.client, txn.WithClock(newClock()))
		var ran []int
		attempt := 0
		err := r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
			attempt++
			n := attempt
			if err := txn.OnCommit(ctx, func() { ran = append(ran, n) }); err != nil {
				return err
			}
			_, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1})
			return err
		})
		require.NoError(t, err)
		require.Equal(t, []int{3}, ran, "only the callbacks of the attempt that committed run")
	})
}

// TestNilClient: a nil client yields a Runner that reports ErrNilRunner.
func TestNilClient(t *testing.T) {
	r := txnmongo.New(nil)
	require.ErrorIs(t, r.Err(), txn.ErrNilRunner)
	err := r.Run(context.Background(), func(context.Context, *mongo.Session) error { return nil })
	require.ErrorIs(t, err, txn.ErrNilRunner)
}
