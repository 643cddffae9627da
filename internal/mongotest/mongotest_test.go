package mongotest_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/txnkit/txn/internal/mongotest"
)

const dbName = "test"

// doc builds an ordered document from alternating keys and values.
func doc(kv ...any) bson.D {
	d := make(bson.D, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		d = append(d, bson.E{Key: kv[i].(string), Value: kv[i+1]})
	}
	return d
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a driver client for srv that is disconnected when the
// test ends.
func connect(t *testing.T, srv *mongotest.Server, opts ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	all := append([]*options.ClientOptions{options.Client().ApplyURI(srv.URI())}, opts...)
	client, err := mongo.Connect(all...)
	require.NoError(t, err, "connect")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	})
	return client
}

// serverError returns err as a mongo.ServerError or fails the test.
func serverError(t *testing.T, err error) mongo.ServerError {
	t.Helper()
	var se mongo.ServerError
	require.ErrorAs(t, err, &se, "error %v (%T) is not a mongo.ServerError", err, err)
	return se
}

// value reads field key of the committed document id.
func value(t *testing.T, srv *mongotest.Server, coll string, id any, key string) bson.RawValue {
	t.Helper()
	d, ok := srv.Doc(dbName, coll, id)
	require.True(t, ok, "document %v not found in %s", id, coll)
	return d.Lookup(key)
}

// setup starts a server and returns it with a test context, a client and
// the collection c of the test database.
func setup(t *testing.T, opts ...mongotest.Option) (*mongotest.Server, context.Context, *mongo.Client, *mongo.Collection) {
	t.Helper()
	srv := mongotest.New(t, opts...)
	ctx := testContext(t)
	client := connect(t, srv)
	return srv, ctx, client, client.Database(dbName).Collection("c")
}

// mustInsert inserts d into coll or fails the test.
func mustInsert(t *testing.T, ctx context.Context, coll *mongo.Collection, d any) {
	t.Helper()
	_, err := coll.InsertOne(ctx, d)
	require.NoError(t, err)
}

// insertInTxn starts a transaction that inserts {_id: 1} into coll.
func insertInTxn(t *testing.T, ctx context.Context, client *mongo.Client, coll *mongo.Collection) (*mongo.Session, context.Context) {
	t.Helper()
	sess, sctx := startTxn(t, ctx, client)
	mustInsert(t, sctx, coll, bson.M{"_id": 1})
	return sess, sctx
}

// mustSetFailPoint sets fp on srv or fails the test.
func mustSetFailPoint(t *testing.T, srv *mongotest.Server, fp mongotest.FailPoint) {
	t.Helper()
	require.NoError(t, srv.SetFailPoint(fp))
}

func namesOf(cmds []mongotest.Command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.Name
	}
	return out
}

func TestHandshakePresentsReplicaSetPrimary(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	require.True(t, strings.Contains(srv.URI(), "replicaSet=rs0"), "URI = %q", srv.URI())
	require.True(t, strings.HasPrefix(srv.URI(), "mongodb://127.0.0.1:"), "URI = %q", srv.URI())
	client := connect(t, srv)
	require.NoError(t, client.Ping(ctx, nil), "ping")
	var hello bson.M
	require.NoError(t, client.Database("admin").RunCommand(ctx, doc("hello", 1)).Decode(&hello), "hello")
	for k, want := range map[string]any{
		"isWritablePrimary": true,
		"setName":           "rs0",
		"primary":           srv.Addr(),
		"me":                srv.Addr(),
		"maxWireVersion":    int32(21),
	} {
		assert.EqualValues(t, want, hello[k], "hello[%s] = %v, want %v", k, hello[k], want)
	}
	for _, k := range []string{"maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize",
		"logicalSessionTimeoutMinutes", "electionId", "setVersion", "connectionId", "$clusterTime", "operationTime"} {
		_, ok := hello[k]
		assert.True(t, ok, "hello has no %s", k)
	}
	_, ok := hello["topologyVersion"]
	assert.False(t, ok, "hello advertises topologyVersion; the driver would stream heartbeats")
	// The driver opened its connections with a legacy OP_QUERY isMaster.
	var legacy int
	for _, c := range srv.AllCommands() {
		if c.Name == "isMaster" {
			legacy++
		}
	}
	assert.NotEqual(t, 0, legacy, "no isMaster handshake logged")
	assert.False(t, slices.Contains(srv.CommandNames(), "isMaster"), "Commands includes handshakes")
}

func TestCRUDOutsideTransactions(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	coll := connect(t, srv).Database(dbName).Collection("items")

	_, err := coll.InsertOne(ctx, bson.M{"_id": 1, "name": "a", "n": int32(1)})
	require.NoError(t, err, "insert")
	docs := []any{
		bson.M{"_id": 2, "name": "b", "n": int32(2), "tags": bson.A{"x", "y"}},
		bson.M{"_id": 3, "name": "c", "n": int32(3)},
	}
	_, err = coll.InsertMany(ctx, docs)
	require.NoError(t, err, "insert many")
	_, err = coll.InsertOne(ctx, bson.M{"_id": 2})
	require.True(t, mongo.IsDuplicateKeyError(err), "duplicate insert: err = %v, want duplicate key", err)
	res, err := coll.InsertOne(ctx, bson.M{"name": "generated"})
	require.NoError(t, err, "insert without _id")
	_, ok := res.InsertedID.(bson.ObjectID)
	require.True(t, ok, "InsertedID = %T, want ObjectID", res.InsertedID)

	var got bson.M
	err = coll.FindOne(ctx, bson.M{"_id": 2}).Decode(&got)
	require.NoError(t, err, "find by _id: %v %v", got, err)
	require.EqualValues(t, "b", got["name"], "find by _id: %v %v", got, err)
	err = coll.FindOne(ctx, bson.M{"tags": "y"}).Decode(&got)
	require.NoError(t, err, "find by array element: %v %v", got, err)
	require.EqualValues(t, int32(2), got["_id"], "find by array element: %v %v", got, err)
	err = coll.FindOne(ctx, bson.M{"_id": 42}).Err()
	require.ErrorIs(t, err, mongo.ErrNoDocuments, "find missing: err = %v", err)
	cur, err := coll.Find(ctx, bson.M{"n": bson.M{"$gte": 2}}, options.Find().SetSort(bson.M{"n": -1}).SetProjection(bson.M{"name": 1}))
	require.NoError(t, err, "find range")
	var all []bson.M
	require.NoError(t, cur.All(ctx, &all), "cursor")
	require.Len(t, all, 2, "find range = %v", all)
	require.Equal(t, "c", all[0]["name"], "find range = %v", all)
	require.Equal(t, "b", all[1]["name"], "find range = %v", all)
	require.Nil(t, all[0]["n"], "find range = %v", all)

	up, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"name": "A", "sub.x": 1}, "$inc": bson.M{"n": 10}})
	require.NoError(t, err, "update: %+v %v", up, err)
	require.EqualValues(t, 1, up.MatchedCount, "update: %+v", up)
	require.EqualValues(t, 1, up.ModifiedCount, "update: %+v", up)
	require.EqualValues(t, 11, value(t, srv, "items", 1, "n").Int32(), "n after $inc")
	require.EqualValues(t, 1, value(t, srv, "items", 1, "sub").Document().Lookup("x").Int32(), "sub after $set sub.x")
	up, err = coll.UpdateOne(ctx, bson.M{"_id": 9}, bson.M{"$set": bson.M{"name": "upserted"}}, options.UpdateOne().SetUpsert(true))
	require.NoError(t, err, "upsert: %+v %v", up, err)
	require.EqualValues(t, 1, up.UpsertedCount, "upsert: %+v", up)
	require.Equal(t, int32(9), up.UpsertedID, "upsert: %+v", up)
	_, err = coll.ReplaceOne(ctx, bson.M{"_id": 3}, bson.M{"name": "C"})
	require.NoError(t, err, "replace")
	d, _ := srv.Doc(dbName, "items", 3)
	require.Zero(t, d.Lookup("n").Type, "after replace: %v", d)
	require.Equal(t, "C", d.Lookup("name").StringValue(), "after replace: %v", d)
	many, err := coll.UpdateMany(ctx, bson.M{"_id": bson.M{"$in": bson.A{1, 2}}}, bson.M{"$inc": bson.M{"n": 1}})
	require.NoError(t, err, "update many: %+v %v", many, err)
	require.EqualValues(t, 2, many.ModifiedCount, "update many: %+v %v", many, err)

	var after bson.M
	err = coll.FindOneAndUpdate(ctx, bson.M{"_id": 2}, bson.M{"$inc": bson.M{"n": 1}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
	require.NoError(t, err, "findOneAndUpdate: %v %v", after, err)
	require.EqualValues(t, int32(4), after["n"], "findOneAndUpdate: %v %v", after, err)
	n, err := coll.CountDocuments(ctx, bson.M{"n": bson.M{"$exists": true}})
	require.NoError(t, err, "count documents = %d, %v", n, err)
	require.EqualValues(t, 2, n, "count documents = %d, %v", n, err)
	est, err := coll.EstimatedDocumentCount(ctx)
	require.NoError(t, err, "estimated count = %d, %v", est, err)
	require.EqualValues(t, 5, est, "estimated count = %d, %v", est, err)
	require.NoError(t, coll.FindOneAndDelete(ctx, bson.M{"_id": 9}).Err(), "findOneAndDelete")
	del, err := coll.DeleteMany(ctx, bson.M{"name": bson.M{"$in": bson.A{"C", "generated"}}})
	require.NoError(t, err, "delete many: %+v %v", del, err)
	require.EqualValues(t, 2, del.DeletedCount, "delete many: %+v %v", del, err)
	require.Len(t, srv.Docs(dbName, "items"), 2, "documents left")
	require.NoError(t, coll.Drop(ctx), "drop")
	require.Empty(t, srv.Docs(dbName, "items"), "documents after drop")
}

func TestUnknownCommand(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	err := connect(t, srv).Database(dbName).RunCommand(ctx, doc("frobnicate", 1)).Err()
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(59), "err = %v, want CommandNotFound (59)", err)
}

func TestTransactionCommit(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	client := connect(t, srv)
	coll := client.Database(dbName).Collection("accounts")
	_, err := coll.InsertMany(ctx, []any{bson.M{"_id": "a", "bal": 100}, bson.M{"_id": "b", "bal": 0}})
	require.NoError(t, err)
	srv.ResetCommands()

	sess, err := client.StartSession()
	require.NoError(t, err)
	defer sess.EndSession(ctx)
	require.NoError(t, sess.StartTransaction())
	sctx := mongo.NewSessionContext(ctx, sess)
	_, err = coll.UpdateOne(sctx, bson.M{"_id": "a"}, bson.M{"$inc": bson.M{"bal": -30}})
	require.NoError(t, err, "debit")
	_, err = coll.UpdateOne(sctx, bson.M{"_id": "b"}, bson.M{"$inc": bson.M{"bal": 30}})
	require.NoError(t, err, "credit")
	_, err = coll.InsertOne(sctx, bson.M{"_id": "log1", "amount": 30})
	require.NoError(t, err, "insert")
	// The transaction reads its own writes; nobody else does yet.
	var a bson.M
	err = coll.FindOne(sctx, bson.M{"_id": "a"}).Decode(&a)
	require.NoError(t, err, "read own write: %v %v", a, err)
	require.EqualValues(t, int32(70), a["bal"], "read own write: %v %v", a, err)
	err = coll.FindOne(ctx, bson.M{"_id": "a"}).Decode(&a)
	require.NoError(t, err, "outside read during transaction: %v %v", a, err)
	require.EqualValues(t, int32(100), a["bal"], "outside read during transaction: %v %v", a, err)
	_, ok := srv.Doc(dbName, "accounts", "log1")
	require.False(t, ok, "uncommitted insert visible")
	require.EqualValues(t, 1, srv.OpenTransactions(), "OpenTransactions = %d", srv.OpenTransactions())
	require.NoError(t, sess.CommitTransaction(ctx), "commit")
	got := value(t, srv, "accounts", "a", "bal").Int32()
	require.EqualValues(t, 70, got, "a = %d after commit", got)
	got = value(t, srv, "accounts", "b", "bal").Int32()
	require.EqualValues(t, 30, got, "b = %d after commit", got)
	_, ok = srv.Doc(dbName, "accounts", "log1")
	require.True(t, ok, "committed insert missing")
	require.EqualValues(t, 0, srv.OpenTransactions(), "OpenTransactions = %d after commit", srv.OpenTransactions())

	// The log shows one transaction number, started by the first command.
	var txnCmds []mongotest.Command
	for _, c := range srv.Commands() {
		if c.InTransaction {
			txnCmds = append(txnCmds, c)
		}
	}
	want := []string{"update", "update", "insert", "find", "commitTransaction"}
	require.Equal(t, want, namesOf(txnCmds), "transaction commands = %v, want %v", txnCmds, want)
	id := mongotest.SessionID(sess.ID())
	for i, c := range txnCmds {
		assert.EqualValues(t, id, c.SessionID, "command %v: session %s, want %s and one txnNumber started by the first", c, c.SessionID, id)
		assert.True(t, c.HasTxnNumber, "command %v: session %s, want %s and one txnNumber started by the first", c, c.SessionID, id)
		assert.EqualValues(t, txnCmds[0].TxnNumber, c.TxnNumber, "command %v: session %s, want %s and one txnNumber started by the first", c, c.SessionID, id)
		assert.EqualValues(t, (i == 0), c.StartTransaction, "command %v: session %s, want %s and one txnNumber started by the first", c, c.SessionID, id)
	}
	assert.EqualValues(t, "accounts", txnCmds[0].Collection, "first command names %s.%s", txnCmds[0].Database, txnCmds[0].Collection)
	assert.EqualValues(t, dbName, txnCmds[0].Database, "first command names %s.%s", txnCmds[0].Database, txnCmds[0].Collection)

	// Committing the same transaction number again succeeds, as in MongoDB.
	srv.ResetCommands()
	require.NoError(t, sess.CommitTransaction(ctx), "second commit")
	names := srv.CommandNames()
	require.Equal(t, []string{"commitTransaction"}, names, "second commit sent %v", names)
	got = value(t, srv, "accounts", "a", "bal").Int32()
	require.EqualValues(t, 70, got, "a = %d after second commit", got)
}

func TestTransactionAbort(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 1})
	sess, err := client.StartSession()
	require.NoError(t, err)
	defer sess.EndSession(ctx)
	require.NoError(t, sess.StartTransaction())
	sctx := mongo.NewSessionContext(ctx, sess)
	_, err = coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}})
	require.NoError(t, err)
	_, err = coll.DeleteOne(sctx, bson.M{"_id": 1})
	require.NoError(t, err)
	_, err = coll.InsertOne(sctx, bson.M{"_id": 2})
	require.NoError(t, err)
	require.NoError(t, sess.AbortTransaction(ctx), "abort")
	got := value(t, srv, "c", 1, "v").Int32()
	require.EqualValues(t, 1, got, "v = %d after abort", got)
	_, ok := srv.Doc(dbName, "c", 2)
	require.False(t, ok, "aborted insert visible")
	require.EqualValues(t, 0, srv.OpenTransactions(), "OpenTransactions = %d after abort", srv.OpenTransactions())
	// The document is free again for a write outside a transaction.
	_, err = coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 3}})
	require.NoError(t, err)
}

// startTxn starts a transaction on a new session of client and returns the
// session context.
func startTxn(t *testing.T, ctx context.Context, client *mongo.Client) (*mongo.Session, context.Context) {
	t.Helper()
	sess, err := client.StartSession()
	require.NoError(t, err)
	t.Cleanup(func() { sess.EndSession(context.Background()) })
	require.NoError(t, sess.StartTransaction())
	return sess, mongo.NewSessionContext(ctx, sess)
}

func TestConcurrentSessionsWriteConflict(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	c1, c2 := connect(t, srv), connect(t, srv)
	_, err := c1.Database(dbName).Collection("c").InsertOne(ctx, bson.M{"_id": "k", "v": 0})
	require.NoError(t, err)

	type result struct {
		sess *mongo.Session
		sctx context.Context
		coll *mongo.Collection
		who  int
		err  error
	}
	var ready, wrote sync.WaitGroup
	ready.Add(2)
	wrote.Add(2)
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i, client := range []*mongo.Client{c1, c2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			coll := client.Database(dbName).Collection("c")
			sess, err := client.StartSession()
			if err != nil {
				results[i].err = err
				ready.Done()
				wrote.Done()
				return
			}
			_ = sess.StartTransaction()
			sctx := mongo.NewSessionContext(ctx, sess)
			// Both transactions take their snapshot before either writes.
			err = coll.FindOne(sctx, bson.M{"_id": "k"}).Err()
			ready.Done()
			ready.Wait()
			if err == nil {
				_, err = coll.UpdateOne(sctx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{"v": i + 1}})
			}
			results[i] = result{sess: sess, sctx: sctx, coll: coll, who: i + 1, err: err}
			wrote.Done()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, r := range results {
			if r.sess != nil {
				r.sess.EndSession(context.Background())
			}
		}
	})

	var winner, loser *result
	for i := range results {
		if results[i].err == nil {
			winner = &results[i]
		} else {
			loser = &results[i]
		}
	}
	require.False(t, winner == nil || loser == nil, "want exactly one conflict, got errors %v and %v", results[0].err, results[1].err)
	se := serverError(t, loser.err)
	require.True(t, se.HasErrorCode(112), "loser error = %v, want WriteConflict (112) labelled TransientTransactionError", loser.err)
	require.True(t, se.HasErrorLabel("TransientTransactionError"), "loser error = %v, want WriteConflict (112) labelled TransientTransactionError", loser.err)
	// The server aborted the loser's transaction.
	err = loser.coll.FindOne(loser.sctx, bson.M{"_id": "k"}).Err()
	se = serverError(t, err)
	require.True(t, se.HasErrorCode(251), "command after conflict: %v, want NoSuchTransaction (251) labelled TransientTransactionError", err)
	require.True(t, se.HasErrorLabel("TransientTransactionError"), "command after conflict: %v, want NoSuchTransaction (251) labelled TransientTransactionError", err)
	require.NoError(t, loser.sess.AbortTransaction(ctx), "abort after conflict")
	require.NoError(t, winner.sess.CommitTransaction(ctx), "winner commit")
	got := value(t, srv, "c", "k", "v").AsInt64()
	require.EqualValues(t, int64(winner.who), got, "v = %d, want the winner's %d", got, winner.who)
	var conflicts int
	for _, c := range srv.Commands() {
		if c.ErrorCode == 112 {
			conflicts++
			assert.True(t, slices.Contains(c.ErrorLabels, "TransientTransactionError"), "logged conflict without label: %v", c)
		}
	}
	require.EqualValues(t, 1, conflicts, "%d conflicts logged, want 1", conflicts)
}

func TestSnapshotIsolationAndCommittedAfterSnapshotConflict(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 1})
	sess, sctx := startTxn(t, ctx, client)
	var d bson.M
	err := coll.FindOne(sctx, bson.M{"_id": 1}).Decode(&d)
	require.NoError(t, err, "first read: %v %v", d, err)
	require.EqualValues(t, int32(1), d["v"], "first read: %v %v", d, err)
	// A write outside the transaction commits after its snapshot.
	_, err = coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}})
	require.NoError(t, err)
	mustInsert(t, ctx, coll, bson.M{"_id": 2})
	err = coll.FindOne(sctx, bson.M{"_id": 1}).Decode(&d)
	require.NoError(t, err, "snapshot read: %v %v, want v 1", d, err)
	require.EqualValues(t, int32(1), d["v"], "snapshot read: %v %v, want v 1", d, err)
	err = coll.FindOne(sctx, bson.M{"_id": 2}).Err()
	require.ErrorIs(t, err, mongo.ErrNoDocuments, "document inserted after the snapshot: %v", err)
	_, err = coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 10}})
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(112), "write after a newer commit: %v, want WriteConflict", err)
	require.True(t, se.HasErrorLabel("TransientTransactionError"), "write after a newer commit: %v, want WriteConflict", err)
	_ = sess.AbortTransaction(ctx)
	got := value(t, srv, "c", 1, "v").Int32()
	require.EqualValues(t, 2, got, "v = %d", got)
}

func TestWriteOutsideTransactionWaitsForLock(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 0})
	sess, sctx := startTxn(t, ctx, client)
	_, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 1}})
	require.NoError(t, err)
	srv.ResetCommands()
	done := make(chan error, 1)
	go func() {
		_, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}})
		done <- err
	}()
	// Wait until the outside update reached the server, then commit.
	require.Eventually(t, func() bool { return slices.Contains(srv.CommandNames(), "update") },
		5*time.Second, 5*time.Millisecond, "outside update never arrived")
	select {
	case err := <-done:
		require.Failf(t, "lock not held", "outside update finished while the transaction held the lock: %v", err)
	default:
	}
	require.NoError(t, sess.CommitTransaction(ctx))
	require.NoError(t, <-done, "outside update")
	got := value(t, srv, "c", 1, "v").Int32()
	require.EqualValues(t, 2, got, "v = %d, want 2 (the waiting write applies after the commit)", got)
}

// TestFailPointLeavesTransactionOpen: mongod evaluates failCommand before
// it checks out the session, so an injected error does not touch the
// transaction. As in the specifications' unified test
// transactions/tests/unified/backpressure-retryable-writes.yml, a statement
// failed with an injected WriteConflict is sent again inside the same
// transaction, which then commits both statements.
func TestFailPointLeavesTransactionOpen(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, sctx := insertInTxn(t, ctx, client, coll)
	mustSetFailPoint(t, srv, mongotest.FailPoint{
		Commands: []string{"insert"}, Times: 1,
		ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
	})
	_, err := coll.InsertOne(sctx, bson.M{"_id": 2})
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(112) && se.HasErrorLabel("TransientTransactionError"), "err = %v", err)
	require.Equal(t, 1, srv.OpenTransactions(), "an injected error must leave the transaction open")

	_, err = coll.InsertOne(sctx, bson.M{"_id": 2})
	require.NoError(t, err, "the same statement again, in the same transaction")
	require.NoError(t, sess.CommitTransaction(ctx))
	for _, id := range []int{1, 2} {
		_, ok := srv.Doc(dbName, "c", id)
		assert.True(t, ok, "document %d not committed", id)
	}
	var injected []mongotest.Command
	for _, c := range srv.Commands() {
		if c.FailPoint {
			injected = append(injected, c)
		}
	}
	require.Len(t, injected, 1)
	assert.Equal(t, "insert", injected[0].Name)
	assert.EqualValues(t, 112, injected[0].ErrorCode)
}

// TestFailPointOnFirstStatementStartsNoTransaction: when the statement that
// carries startTransaction is failed by the fail point, mongod never starts
// the transaction, so the transaction's next statement and its commit get
// NoSuchTransaction (251), labelled TransientTransactionError.
func TestFailPointOnFirstStatementStartsNoTransaction(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustSetFailPoint(t, srv, mongotest.FailPoint{
		Commands: []string{"insert"}, Times: 1,
		ErrorCode: 112, ErrorLabels: []string{"TransientTransactionError"},
	})
	sess, sctx := startTxn(t, ctx, client)
	_, err := coll.InsertOne(sctx, bson.M{"_id": 1})
	require.True(t, serverError(t, err).HasErrorCode(112), "err = %v", err)
	require.Zero(t, srv.OpenTransactions(), "the failed first statement must not start the transaction")

	_, err = coll.InsertOne(sctx, bson.M{"_id": 2})
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(251) && se.HasErrorLabel("TransientTransactionError"), "next statement: %v", err)
	err = sess.CommitTransaction(ctx)
	se = serverError(t, err)
	require.True(t, se.HasErrorCode(251) && se.HasErrorLabel("TransientTransactionError"), "commit: %v", err)
	assert.Empty(t, srv.Docs(dbName, "c"))
}

func TestFailPointValidation(t *testing.T) {
	srv := mongotest.New(t)
	for _, fp := range []mongotest.FailPoint{
		{ErrorCode: 1},
		{Commands: []string{"insert"}},
		{Commands: []string{"insert"}, ErrorCode: 1, Times: -1},
	} {
		t.Run(fmt.Sprintf("%+v", fp), func(t *testing.T) {
			assert.Error(t, srv.SetFailPoint(fp), "SetFailPoint(%+v)", fp)
		})
	}
}

func TestConfigureFailPointCommitUnknownResult(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	admin := client.Database("admin")

	err := admin.RunCommand(ctx, doc(
		"configureFailPoint", "failCommand",
		"mode", doc("times", 1),
		"data", doc(
			"failCommands", bson.A{"commitTransaction"},
			"errorCode", 50,
			"errorLabels", bson.A{"UnknownTransactionCommitResult"},
		),
	)).Err()
	require.NoError(t, err, "configureFailPoint")
	sess, _ := insertInTxn(t, ctx, client, coll)
	srv.ResetCommands()
	err = sess.CommitTransaction(ctx)
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(50), "commit: %v, want MaxTimeMSExpired labelled UnknownTransactionCommitResult", err)
	require.True(t, se.HasErrorLabel("UnknownTransactionCommitResult"), "commit: %v, want MaxTimeMSExpired labelled UnknownTransactionCommitResult", err)
	_, ok := srv.Doc(dbName, "c", 1)
	require.False(t, ok, "failed commit was applied")
	require.EqualValues(t, 1, srv.OpenTransactions(), "failed commit ended the transaction")
	// Retrying only the commit commits the transaction.
	require.NoError(t, sess.CommitTransaction(ctx), "commit retry")
	_, ok = srv.Doc(dbName, "c", 1)
	require.True(t, ok, "retried commit not applied")
	cmds := srv.Commands()
	names := namesOf(cmds)
	require.Equal(t, []string{"commitTransaction", "commitTransaction"}, names, "commands = %v, want only commitTransaction twice", cmds)
	require.EqualValues(t, cmds[1].TxnNumber, cmds[0].TxnNumber, "commits = %v", cmds)
	require.EqualValues(t, cmds[1].SessionID, cmds[0].SessionID, "commits = %v", cmds)
	require.True(t, cmds[0].FailPoint, "commits = %v", cmds)
	require.False(t, cmds[1].FailPoint, "commits = %v", cmds)

	// configureFailPoint outside admin is refused, like MongoDB.
	err = client.Database(dbName).RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err()
	se = serverError(t, err)
	require.True(t, se.HasErrorCode(13), "configureFailPoint on %s: %v", dbName, err)
	require.NoError(t, admin.RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err(), "mode off")
}

func TestConfigureFailPointAlwaysOnAndOff(t *testing.T) {
	_, ctx, client, coll := setup(t)
	admin := client.Database("admin")
	err := admin.RunCommand(ctx, doc(
		"configureFailPoint", "failCommand",
		"mode", "alwaysOn",
		"data", doc("failCommands", bson.A{"find"}, "errorCode", 388),
	)).Err()
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		err := coll.FindOne(ctx, bson.M{}).Err()
		se := serverError(t, err)
		require.True(t, se.HasErrorCode(388), "find %d: %v", i, err)
	}
	require.NoError(t, admin.RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err())
	err = coll.FindOne(ctx, bson.M{}).Err()
	require.ErrorIs(t, err, mongo.ErrNoDocuments, "find after off: %v", err)
}

func TestFailPointAutomaticLabelsRetryCommit(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	// ShutdownInProgress without explicit labels: the server labels it
	// RetryableWriteError and the driver retries the commit once.
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 1, ErrorCode: 91})
	srv.ResetCommands()
	require.NoError(t, sess.CommitTransaction(ctx), "commit")
	cmds := srv.Commands()
	names := namesOf(cmds)
	require.Equal(t, []string{"commitTransaction", "commitTransaction"}, names, "commands = %v", cmds)
	require.EqualValues(t, 91, cmds[0].ErrorCode, "first commit = %v", cmds[0])
	require.True(t, slices.Contains(cmds[0].ErrorLabels, "RetryableWriteError"), "first commit = %v", cmds[0])
	_, ok := srv.Doc(dbName, "c", 1)
	require.True(t, ok, "not committed")
}

func TestCloseConnectionDuringCommit(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	// Both the commit and the driver's own retry of it lose their
	// connection: the outcome reaches the caller as unknown. The commit runs
	// without a deadline: under a context with a deadline the driver keeps
	// retrying retryable errors until the deadline instead of once.
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 2, CloseConnection: true})
	srv.ResetCommands()
	err := sess.CommitTransaction(context.Background())
	require.Error(t, err, "commit through two dropped connections: %v", srv.Commands())
	assert.True(t, mongo.IsNetworkError(err), "commit error %v is not a network error", err)
	se := serverError(t, err)
	assert.True(t, se.HasErrorLabel("UnknownTransactionCommitResult"), "commit error %v lacks UnknownTransactionCommitResult", err)
	_, ok := srv.Doc(dbName, "c", 1)
	require.False(t, ok, "closeConnection applied the commit")
	cmds := srv.Commands()
	names := namesOf(cmds)
	require.Equal(t, []string{"commitTransaction", "commitTransaction"}, names, "commands = %v", cmds)
	require.True(t, cmds[0].Hangup, "commands = %v", cmds)
	require.True(t, cmds[1].Hangup, "commands = %v", cmds)
	// The fail point is used up; retrying the commit commits.
	require.NoError(t, sess.CommitTransaction(ctx), "commit retry")
	_, ok = srv.Doc(dbName, "c", 1)
	require.True(t, ok, "not committed after retry")
}

func TestCloseConnectionOnceIsRetriedByDriver(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 1, CloseConnection: true})
	srv.ResetCommands()
	require.NoError(t, sess.CommitTransaction(ctx), "commit")
	cmds := srv.Commands()
	names := namesOf(cmds)
	require.Equal(t, []string{"commitTransaction", "commitTransaction"}, names, "commands = %v", cmds)
	require.True(t, cmds[0].Hangup, "commands = %v", cmds)
	require.False(t, cmds[1].Hangup, "commands = %v", cmds)
	require.NotEqual(t, cmds[1].ConnectionID, cmds[0].ConnectionID, "retry used the closed connection")
}

func TestCloseConnectionAfterApplyCommitsOnce(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "n": 0})
	sess, sctx := startTxn(t, ctx, client)
	_, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"n": 1}})
	require.NoError(t, err)
	err = client.Database("admin").RunCommand(ctx, doc(
		"configureFailPoint", "failCommand",
		"mode", doc("times", 1),
		"data", doc("failCommands", bson.A{"commitTransaction"}, "closeConnectionAfterApply", true),
	)).Err()
	require.NoError(t, err)
	srv.ResetCommands()
	// The first commit applies and loses its reply; the driver's retry of
	// the same transaction number succeeds without applying it twice.
	require.NoError(t, sess.CommitTransaction(ctx), "commit")
	got := value(t, srv, "c", 1, "n").Int32()
	require.EqualValues(t, 1, got, "n = %d, want 1", got)
	cmds := srv.Commands()
	names := namesOf(cmds)
	require.Equal(t, []string{"commitTransaction", "commitTransaction"}, names, "commands = %v", cmds)
	require.True(t, cmds[0].Hangup, "commands = %v", cmds)
}

func TestRetryableWriteAppliedOnce(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	coll := connect(t, srv).Database(dbName).Collection("c")
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"insert"}, Times: 1, CloseConnectionAfterApply: true})
	_, err := coll.InsertOne(ctx, bson.M{"_id": 1})
	require.NoError(t, err, "insert: %v (the retry must get the first reply, not a duplicate key error)")
	cmds := srv.Commands()
	require.EqualValues(t, 2, len(cmds), "commands = %v", cmds)
	require.EqualValues(t, cmds[1].TxnNumber, cmds[0].TxnNumber, "commands = %v", cmds)
	require.True(t, cmds[0].HasTxnNumber, "commands = %v", cmds)
	require.False(t, cmds[0].InTransaction, "commands = %v", cmds)
	got := len(srv.Docs(dbName, "c"))
	require.EqualValues(t, 1, got, "%d documents", got)
}

func TestWriteConcernErrorOnCommit(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	err := srv.SetFailPoint(mongotest.FailPoint{
		Commands:          []string{"commitTransaction"},
		Times:             1,
		WriteConcernError: &mongotest.WriteConcernError{Code: 64, Message: "waiting for replication timed out"},
	})
	require.NoError(t, err)
	err = sess.CommitTransaction(ctx)
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(64), "commit: %v, want WriteConcernFailed labelled UnknownTransactionCommitResult", err)
	require.True(t, se.HasErrorLabel("UnknownTransactionCommitResult"), "commit: %v, want WriteConcernFailed labelled UnknownTransactionCommitResult", err)
	// A write concern error reports on replication, not on the commit.
	_, ok := srv.Doc(dbName, "c", 1)
	require.True(t, ok, "commit with writeConcernError not applied")
}

func TestFailPointSkipBlockAndAppName(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	plain := connect(t, srv)
	named := connect(t, srv, options.Client().SetAppName("victim"))

	err := srv.SetFailPoint(mongotest.FailPoint{Commands: []string{"ping"}, ErrorCode: 11600, AppName: "victim", Skip: 1})
	require.NoError(t, err)
	require.NoError(t, plain.Ping(ctx, nil), "ping from another app")
	require.NoError(t, named.Ping(ctx, nil), "skipped ping")
	for i := 0; i < 2; i++ {
		err := named.Database("admin").RunCommand(ctx, doc("ping", 1)).Err()
		se := serverError(t, err)
		require.True(t, se.HasErrorCode(11600), "ping %d: %v", i, err)
	}
	n := srv.ClearFailPoint()
	require.EqualValues(t, 2, n, "fail point acted %d times, want 2", n)

	// Two pings, one fail point that blocks the first to arrive: the
	// other one returns while the blocked one still waits, until its
	// connection is dropped.
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"ping"}, Times: 1, BlockTime: time.Hour})
	pings := make(chan error, 2)
	for range 2 {
		go func() { pings <- plain.Ping(ctx, nil) }()
	}
	require.NoError(t, <-pings, "the ping that was not blocked")
	select {
	case err := <-pings:
		require.Failf(t, "blockTimeMS did not delay the command", "the blocked ping returned %v before the connection was dropped", err)
	default:
	}
	srv.DropConnections()
	require.Error(t, <-pings, "the blocked ping, its connection dropped")
}

func TestNoSuchTransactionAfterLifetime(t *testing.T) {
	srv, ctx, client, coll := setup(t, mongotest.WithTransactionLifetime(50*time.Millisecond))
	sess, _ := insertInTxn(t, ctx, client, coll)
	deadline := time.Now().Add(5 * time.Second)
	for srv.OpenTransactions() != 0 {
		require.False(t, time.Now().After(deadline), "transaction outlived its lifetime")
		time.Sleep(10 * time.Millisecond)
		_ = coll.FindOne(ctx, bson.M{}).Err() // commands reap expired transactions
	}
	err := sess.CommitTransaction(ctx)
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(251), "commit of expired transaction: %v", err)
	require.True(t, se.HasErrorLabel("TransientTransactionError"), "commit of expired transaction: %v", err)
}

func TestDropConnectionsAndClose(t *testing.T) {
	srv, err := mongotest.Start()
	require.NoError(t, err)
	ctx := testContext(t)
	client := connect(t, srv)
	coll := client.Database(dbName).Collection("c")
	mustInsert(t, ctx, coll, bson.M{"_id": 1})
	require.NotEqual(t, 0, srv.DropConnections(), "no connections to drop")
	// Reads are retried by the driver on a new connection.
	require.NoError(t, coll.FindOne(ctx, bson.M{"_id": 1}).Err(), "find after drop")
	srv.Close()
	srv.Close()
	// Closed: the listener refuses connections, so nothing is served. (A
	// find through the driver fails too, but only seconds later, once its
	// retry gives up.)
	_, err = net.Dial("tcp", srv.Addr())
	require.Error(t, err, "the server accepts connections after Close")
}

func TestConcurrentInsertsOfOneID(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	s1, ctx1 := startTxn(t, ctx, client)
	_, ctx2 := startTxn(t, ctx, client)
	_, err := coll.InsertOne(ctx1, bson.M{"_id": "x", "by": 1})
	require.NoError(t, err)
	_, err = coll.InsertOne(ctx2, bson.M{"_id": "x", "by": 2})
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(112), "second insert: %v, want WriteConflict", err)
	require.True(t, se.HasErrorLabel("TransientTransactionError"), "second insert: %v, want WriteConflict", err)
	require.NoError(t, s1.CommitTransaction(ctx))
	// Once committed, the same insert outside a transaction is a duplicate.
	_, err = coll.InsertOne(ctx, bson.M{"_id": "x"})
	require.True(t, mongo.IsDuplicateKeyError(err), "insert after commit: %v", err)
	got := value(t, srv, "c", "x", "by").Int32()
	require.EqualValues(t, 1, got, "by = %d", got)
}

func TestConfigureFailPointRejectsBadInput(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	admin := connect(t, srv).Database("admin")
	for _, cmd := range []bson.D{
		doc("configureFailPoint", "somethingElse", "mode", "alwaysOn", "data", doc("failCommands", bson.A{"find"}, "errorCode", 1)),
		doc("configureFailPoint", "failCommand", "mode", "sometimes", "data", doc("failCommands", bson.A{"find"}, "errorCode", 1)),
		doc("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", doc("errorCode", 1)),
		doc("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", doc("failCommands", bson.A{"find"})),
	} {
		t.Run(fmt.Sprint(cmd), func(t *testing.T) {
			err := admin.RunCommand(ctx, cmd).Err()
			se := serverError(t, err)
			assert.True(t, se.HasErrorCode(2), "%v: %v, want BadValue", cmd, err)
		})
	}
}

// TestDriverRetriesCommitUntilDeadline records a behaviour of the driver
// that the txnmongo backend must allow for: under a context with a
// deadline, the driver retries a retryable commitTransaction failure until
// the deadline rather than once.
func TestDriverRetriesCommitUntilDeadline(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 3, CloseConnection: true})
	srv.ResetCommands()
	require.NoError(t, sess.CommitTransaction(ctx), "commit under a deadline")
	got := len(srv.Commands())
	require.EqualValues(t, 4, got, "%d commit attempts, want 4: %v", got, srv.Commands())
}

func TestKillSessionsAbortsOpenTransaction(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	require.EqualValues(t, 1, srv.OpenTransactions(), "no open transaction")
	err := client.Database("admin").RunCommand(ctx, doc("killSessions", bson.A{sess.ID()})).Err()
	require.NoError(t, err, "killSessions")
	require.EqualValues(t, 0, srv.OpenTransactions(), "killSessions left the transaction open")
	err = sess.CommitTransaction(ctx)
	se := serverError(t, err)
	require.True(t, se.HasErrorCode(251), "commit after killSessions: %v, want NoSuchTransaction", err)
	_, ok := srv.Doc(dbName, "c", 1)
	require.False(t, ok, "killed transaction committed")
}
