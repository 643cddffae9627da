package txnmongo_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/mongotest"
)

// selectionTimeout is the server selection timeout of the clients whose
// server becomes unreachable, short so that the tests stay fast.
const selectionTimeout = 300 * time.Millisecond

// warm waits until client has selected its server and holds an idle
// pooled connection to it, so that under a short server selection timeout
// only the failures a test provokes can time out, not a slow handshake
// on a loaded machine.
func warm(t *testing.T, client *mongo.Client) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := client.Ping(ctx, nil)
		cancel()
		if err == nil {
			return
		}
		require.False(t, time.Now().After(deadline), "server never reachable: %v", err)
	}
}

// TestCommitReplyLostThenServerUnreachable: the server applies the
// commit, its reply is lost (a proxy cuts the connection after reading
// it), and from then on the server refuses connections. The driver's own
// retry of the commit cannot reach a server and returns the commit's
// network error, labelled UnknownTransactionCommitResult; the Runner
// re-sends the commit, which fails server selection, and the driver
// leaves that error unlabelled (it labels server selection errors only
// outside a commit). The commit did happen, so Run must not report a
// failure: it returns an error matching txn.ErrCommitUnknown, fn ran once
// and the increment is there once.
//
// The client reaches the server through gate -> faultproxy -> server. On
// mongotest it discovers a replica set whose member is the gate
// (mongotest.WithHost), so that, as on a real deployment, an unreachable
// primary fails server selection. A real replica set names its own hosts,
// so there the client connects directly to the primary through the proxy;
// the driver then fails the re-send with an unlabelled-for-commit
// connection error instead, and Run must report the same.
func TestCommitReplyLostThenServerUnreachable(t *testing.T) {
	t.Run("mongotest", func(t *testing.T) {
		g := startGate(t, "")
		srv := mongotest.New(t, mongotest.WithHost(g.Addr()))
		p, err := faultproxy.Start(srv.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = p.Close() })
		g.setTarget(p.Addr())
		e := newEnv(t, "mongotest", srv, "mongodb://"+srv.Addr()+"/?directConnection=true")
		lastErr := commitReplyLost(t, e, p, g, srv.URI())
		var sse topology.ServerSelectionError
		assert.ErrorAs(t, lastErr, &sse, "the re-sent commit could select no server")
	})
	t.Run("replset", func(t *testing.T) {
		uri := os.Getenv(uriVar)
		if uri == "" {
			t.Skipf("no real MongoDB: set %s to a replica set started with enableTestCommands=1 to run this scenario against it", uriVar)
		}
		e := newEnv(t, "replset", nil, uri)
		p, err := faultproxy.Start(e.primaryAddr(t))
		require.NoError(t, err)
		t.Cleanup(func() { _ = p.Close() })
		g := startGate(t, p.Addr())
		commitReplyLost(t, e, p, g, "mongodb://"+g.Addr()+"/?directConnection=true")
	})
}

// TestIdempotentAfterCommitUnreachable: the scenario of
// TestCommitReplyLostThenServerUnreachable with txn.Idempotent. The commit
// re-send timed out in server selection, and driver v2.8.2 leaves the
// session marked as committing after such a timeout; a new transaction on
// it would send every statement with startTransaction and could "commit"
// without sending anything. So Run does not run fn again: it returns an
// error matching txn.ErrCommitUnknown. mongotest only: through a direct
// connection the re-send fails with a connection error, not a timeout.
func TestIdempotentAfterCommitUnreachable(t *testing.T) {
	t.Run("mongotest", func(t *testing.T) {
		g := startGate(t, "")
		srv := mongotest.New(t, mongotest.WithHost(g.Addr()))
		p, err := faultproxy.Start(srv.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = p.Close() })
		g.setTarget(p.Addr())
		e := newEnv(t, "mongotest", srv, "mongodb://"+srv.Addr()+"/?directConnection=true")
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
		p.Arm([]byte("commitTransaction"), faultproxy.CutAfterReply)
		client := connect(t, srv.URI(), options.Client().SetAppName(e.app).SetServerSelectionTimeout(selectionTimeout))
		warm(t, client)
		e.resetCommands() // the ping's implicit session may be the Run's, pooled
		r := txnmongo.New(client, txn.WithClock(newClock()))
		acct := client.Database(e.db).Collection("acct")
		calls := 0
		err = r.Run(e.ctx(t), func(ctx context.Context, _ *mongo.Session) error {
			calls++
			if _, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
				return err
			}
			g.dieOnCut()
			return nil
		}, txn.Idempotent())
		require.ErrorIs(t, err, txn.ErrCommitUnknown)
		assert.ErrorContains(t, err, "still marks as committing")
		assert.Equal(t, 1, calls, "fn must not run on a session the driver still marks as committing")
		assert.EqualValues(t, 1, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"), "the first commit was applied")
	})
	t.Run("replset", func(t *testing.T) {
		t.Skip("needs a replica set member behind a proxy that the driver discovers as such (mongotest.WithHost); a real replica set names its own hosts")
	})
}

// commitReplyLost runs the scenario of TestCommitReplyLostThenServerUnreachable
// with a client connected to uri, which leads through g and then p to the
// server of e, and returns the last error of the Run.
func commitReplyLost(t *testing.T, e *env, p *faultproxy.Proxy, g *gate, uri string) error {
	t.Helper()
	e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
	p.Arm([]byte("commitTransaction"), faultproxy.CutAfterReply)
	client := connect(t, uri, options.Client().SetAppName(e.app).SetMonitor(e.mon.commandMonitor()).
		SetServerSelectionTimeout(selectionTimeout))
	warm(t, client)
	e.resetCommands() // the ping's implicit session may be the Run's, pooled
	rec := &recorder{}
	r := txnmongo.New(client, txn.WithClock(newClock()), txn.WithObserver(rec))
	acct := client.Database(e.db).Collection("acct")
	calls := 0
	var lsid string
	err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
		calls++
		lsid = sessionID(sess)
		if _, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
			return err
		}
		g.dieOnCut() // the server vanishes when the proxy cuts the commit's reply
		return nil
	})
	require.ErrorIs(t, err, txn.ErrCommitUnknown, "the commit was applied: its outcome is unknown, not a failure")
	var gu *txn.GiveUpError
	require.ErrorAs(t, err, &gu)
	assert.True(t, gu.Ambiguous)
	assert.Equal(t, 1, calls, "fn must not run again")
	assert.Equal(t, 1, p.Fires(), "the commit's reply was lost once")
	require.Equal(t, []txn.Class{txn.ClassCommitRetryable}, rec.retryClasses(), "one commit re-send by the Runner")
	assert.True(t, mongo.IsNetworkError(rec.retries[0].Err), "the re-send followed the lost reply: %v", rec.retries[0].Err)
	// The commit reached the server once, through the proxy; neither the
	// driver's retry nor the Runner's re-send reached it.
	checkCommands(t, e, lsid, "update#1 start", "commitTransaction#1")
	assert.EqualValues(t, 1, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"), "the commit was applied once")
	return gu.Last
}

// TestCommitNotSentIsRetried: the server becomes unreachable after fn's
// last operation and before the commit, and the driver has seen it go (its
// topology shows the member unknown). The Runner's commitTransaction fails
// server selection: the driver did not send it, and no earlier commit of
// the transaction exists, so nothing was committed and the error is
// retryable (fn runs again in a new transaction), not an unknown outcome.
// The driver leaves that error unlabelled; before the fix Run returned it
// as a permanent error after one attempt.
//
// Only mongotest can stand behind the proxy chain in replica-set mode
// (mongotest.WithHost); through a direct connection the driver never
// fails server selection, so the scenario cannot be built against a real
// replica set.
func TestCommitNotSentIsRetried(t *testing.T) {
	t.Run("mongotest", func(t *testing.T) {
		g := startGate(t, "")
		srv := mongotest.New(t, mongotest.WithHost(g.Addr()))
		g.setTarget(srv.Addr())
		e := newEnv(t, "mongotest", srv, "mongodb://"+srv.Addr()+"/?directConnection=true")
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
		unknown := make(chan struct{}, 1)
		client := connect(t, srv.URI(), options.Client().SetAppName(e.app).SetMonitor(e.mon.commandMonitor()).
			SetServerSelectionTimeout(selectionTimeout).SetHeartbeatInterval(500*time.Millisecond).
			SetServerMonitor(&event.ServerMonitor{
				// The topology's event, not the server's: the driver
				// publishes a server's change before server selection
				// can see it, and the topology's after.
				TopologyDescriptionChanged: func(ev *event.TopologyDescriptionChangedEvent) {
					for _, sd := range ev.NewDescription.Servers {
						if sd.Kind != "Unknown" {
							return
						}
					}
					select {
					case unknown <- struct{}{}:
					default:
					}
				},
			}))
		warm(t, client)
		e.resetCommands() // the ping's implicit session may be the Run's, pooled
		t.Cleanup(func() {
			// Ending the client's sessions needs a server: do not wait
			// for the usual disconnect timeout.
			ctx, cancel := context.WithTimeout(context.Background(), selectionTimeout)
			defer cancel()
			_ = client.Disconnect(ctx)
		})
		rec := &recorder{}
		r := txnmongo.New(client, txn.MaxAttempts(2), txn.WithClock(newClock()), txn.WithObserver(rec))
		acct := client.Database(e.db).Collection("acct")
		calls := 0
		var lsid string
		var id bson.Raw
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			lsid, id = sessionID(sess), slices.Clone(sess.ID())
			if calls > 1 {
				_, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}})
				return err
			}
			if _, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
				return err
			}
			select {
			case <-unknown: // the topology before the first discovery
			default:
			}
			g.die()
			select {
			case <-unknown:
			case <-time.After(waitLimit):
				return txn.Permanent(errors.New("the driver never saw the server go"))
			}
			return nil
		})
		// The first transaction is still open on the server, which would
		// abort it after transactionLifetimeLimitSeconds.
		defer e.killSession(t, id)
		require.NotEmpty(t, rec.retries, "Run = %v: the unsent commit must be retried", err)
		assert.Equal(t, txn.ClassRetryable, rec.retries[0].Class, "a commit that reached no server committed nothing")
		var sse topology.ServerSelectionError
		assert.ErrorAs(t, rec.retries[0].Err, &sse)
		// The server stays away: the second attempt finds no server either,
		// after the driver's own server selection, and Run stops at once
		// (another try would only wait again) with a known outcome.
		require.ErrorIs(t, err, txn.ErrUnavailable)
		assert.NotErrorIs(t, err, txn.ErrCommitUnknown, "no commit reached the server: the outcome is known")
		assert.Equal(t, 2, calls)
		checkCommands(t, e, lsid, "update#1 start") // no commit, no abort reached the server
		assert.EqualValues(t, 0, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"))
	})
	t.Run("replset", func(t *testing.T) {
		t.Skip("needs a replica set member behind a proxy that the driver discovers as such (mongotest.WithHost); a real replica set names its own hosts")
	})
}

// TestFnFinishesTransactionThenFails: fn commits or aborts the
// transaction itself and then returns an error, even one asking for a
// retry. Run must end with txn.ErrFnFinishedTx and never run fn again:
// a commit fn made may have been applied, and running fn again would
// apply its writes twice.
func TestFnFinishesTransactionThenFails(t *testing.T) {
	cases := []struct {
		name    string
		fp      *mongotest.FailPoint // on commitTransaction
		finish  func(ctx context.Context, sess *mongo.Session) error
		applied int64
	}{
		{
			// The commit is applied, its reply and the driver's retry's
			// reply are lost: UnknownTransactionCommitResult. Before the
			// fix Run re-ran fn and the increment was applied twice.
			name:    "own commit reply lost",
			fp:      &mongotest.FailPoint{Times: 2, CloseConnectionAfterApply: true},
			finish:  func(ctx context.Context, sess *mongo.Session) error { return sess.CommitTransaction(ctx) },
			applied: 1,
		},
		{
			// ShutdownInProgress for the commit and the driver's retry:
			// UnknownTransactionCommitResult, nothing committed.
			name:    "own commit fails with a retryable error",
			fp:      &mongotest.FailPoint{Times: 2, ErrorCode: 91, ErrorLabels: []string{"RetryableWriteError"}},
			finish:  func(ctx context.Context, sess *mongo.Session) error { return sess.CommitTransaction(ctx) },
			applied: 0,
		},
		{
			name: "own commit, then Retry",
			finish: func(ctx context.Context, sess *mongo.Session) error {
				if err := sess.CommitTransaction(ctx); err != nil {
					return err
				}
				return txn.Retry(errors.New("fn asks for another attempt"))
			},
			applied: 1,
		},
		{
			name: "own abort, then Retry",
			finish: func(ctx context.Context, sess *mongo.Session) error {
				if err := sess.AbortTransaction(ctx); err != nil {
					return err
				}
				return txn.Retry(errors.New("fn asks for another attempt"))
			},
			applied: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				e.insert(t, "acct", bson.M{"_id": 1, "v": 0})
				if tc.fp != nil {
					fp := *tc.fp
					fp.Commands = []string{"commitTransaction"}
					e.failPoint(t, fp)
				}
				r := txnmongo.New(e.client, txn.WithClock(newClock()))
				calls := 0
				var id bson.Raw
				err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
					calls++
					id = slices.Clone(sess.ID())
					if _, err := e.coll("acct").UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
						return err
					}
					return tc.finish(ctx, sess)
				})
				// A commit of fn's that failed leaves the transaction open
				// on the server, holding its lock until
				// transactionLifetimeLimitSeconds.
				defer e.killSession(t, id)
				require.ErrorIs(t, err, txn.ErrFnFinishedTx)
				assert.Equal(t, 1, calls, "fn must not run again")
				e.clearFailPoint(t)
				assert.Equal(t, tc.applied, intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], "v"))
				assert.Zero(t, e.client.NumberSessionsInProgress())
			})
		})
	}
}

// TestFnOwnCommitTimedOutIsNotRunAgain: fn commits itself and the commit
// fails with MaxTimeMSExpired labelled UnknownTransactionCommitResult. The
// driver treats that as a timeout and leaves the session's transaction
// "in progress", so the session cannot show that fn finished it; the
// label can, since only commitTransaction carries it. Run returns fn's
// error as it is, without running fn again.
func TestFnOwnCommitTimedOutIsNotRunAgain(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.failPoint(t, mongotest.FailPoint{
			Commands: []string{"commitTransaction"}, Times: 1,
			ErrorCode: 50, ErrorLabels: []string{"UnknownTransactionCommitResult"},
		})
		r := txnmongo.New(e.client, txn.WithClock(newClock()))
		calls := 0
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": 1}); err != nil {
				return err
			}
			return sess.CommitTransaction(ctx)
		})
		ce := commandError(t, err)
		assert.EqualValues(t, 50, ce.Code)
		var gu *txn.GiveUpError
		assert.False(t, errors.As(err, &gu), "a permanent error comes back as it is: %v", err)
		assert.Equal(t, 1, calls, "fn must not run again")
	})
}

// TestNetworkErrorOutsideTransactionNotRetried: fn writes through a
// context without the session, so the write is not part of the
// transaction, and the write's connection drops. The driver labels that
// network error NetworkError only (no transaction label). Aborting the
// transaction cannot undo such a write and it may have been applied, so
// the error is permanent: Run returns it and does not run fn again.
func TestNetworkErrorOutsideTransactionNotRetried(t *testing.T) {
	cases := []struct {
		name    string
		fp      mongotest.FailPoint
		applied int64
	}{
		// Applied, then both replies lost (the write and the driver's
		// retry of it, which the server answers from its first reply):
		// running fn again would apply it a second time.
		{"applied", mongotest.FailPoint{Times: 2, CloseConnectionAfterApply: true}, 1},
		// Not applied: the connection drops before the server runs it.
		{"not applied", mongotest.FailPoint{Times: 2, CloseConnection: true}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachServer(t, func(t *testing.T, e *env) {
				e.insert(t, "audit", bson.M{"_id": 1, "n": 0})
				fp := tc.fp
				fp.Commands = []string{"update"}
				e.failPoint(t, fp)
				r := txnmongo.New(e.client, txn.WithClock(newClock()))
				outside := e.ctx(t) // carries no session
				calls := 0
				err := r.Run(outside, func(ctx context.Context, _ *mongo.Session) error {
					calls++
					if _, err := e.coll("c").InsertOne(ctx, bson.M{"_id": calls}); err != nil {
						return err
					}
					_, err := e.coll("audit").UpdateOne(outside, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"n": 1}})
					return err
				})
				require.Error(t, err)
				assert.True(t, mongo.IsNetworkError(err), "Run = %v, want the network error as it is", err)
				var gu *txn.GiveUpError
				assert.False(t, errors.As(err, &gu), "a permanent error comes back as it is: %v", err)
				assert.Equal(t, 1, calls, "fn must not run again")
				e.clearFailPoint(t)
				assert.Equal(t, tc.applied, intField(t, e.find(t, "audit", bson.M{"_id": 1})[0], "n"))
				assert.Empty(t, e.find(t, "c", bson.M{}), "the transaction was aborted")
			})
		})
	}
}
