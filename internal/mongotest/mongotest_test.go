package mongotest_test

import (
	"context"
	"errors"
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
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
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
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a mongo.ServerError", err, err)
	}
	return se
}

// value reads field key of the committed document id.
func value(t *testing.T, srv *mongotest.Server, coll string, id any, key string) bson.RawValue {
	t.Helper()
	d, ok := srv.Doc(dbName, coll, id)
	if !ok {
		t.Fatalf("document %v not found in %s", id, coll)
	}
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
	if _, err := coll.InsertOne(ctx, d); err != nil {
		t.Fatal(err)
	}
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
	if err := srv.SetFailPoint(fp); err != nil {
		t.Fatal(err)
	}
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
	if !strings.Contains(srv.URI(), "replicaSet=rs0") || !strings.HasPrefix(srv.URI(), "mongodb://127.0.0.1:") {
		t.Fatalf("URI = %q", srv.URI())
	}
	client := connect(t, srv)
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("ping: %v", err)
	}
	var hello bson.M
	if err := client.Database("admin").RunCommand(ctx, doc("hello", 1)).Decode(&hello); err != nil {
		t.Fatalf("hello: %v", err)
	}
	for k, want := range map[string]any{
		"isWritablePrimary": true,
		"setName":           "rs0",
		"primary":           srv.Addr(),
		"me":                srv.Addr(),
		"maxWireVersion":    int32(21),
	} {
		if hello[k] != want {
			t.Errorf("hello[%s] = %v, want %v", k, hello[k], want)
		}
	}
	for _, k := range []string{"maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize",
		"logicalSessionTimeoutMinutes", "electionId", "setVersion", "connectionId", "$clusterTime", "operationTime"} {
		if _, ok := hello[k]; !ok {
			t.Errorf("hello has no %s", k)
		}
	}
	if _, ok := hello["topologyVersion"]; ok {
		t.Error("hello advertises topologyVersion; the driver would stream heartbeats")
	}
	// The driver opened its connections with a legacy OP_QUERY isMaster.
	var legacy int
	for _, c := range srv.AllCommands() {
		if c.Name == "isMaster" {
			legacy++
		}
	}
	if legacy == 0 {
		t.Error("no isMaster handshake logged")
	}
	if slices.Contains(srv.CommandNames(), "isMaster") {
		t.Error("Commands includes handshakes")
	}
}

func TestCRUDOutsideTransactions(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	coll := connect(t, srv).Database(dbName).Collection("items")

	if _, err := coll.InsertOne(ctx, bson.M{"_id": 1, "name": "a", "n": int32(1)}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	docs := []any{
		bson.M{"_id": 2, "name": "b", "n": int32(2), "tags": bson.A{"x", "y"}},
		bson.M{"_id": 3, "name": "c", "n": int32(3)},
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatalf("insert many: %v", err)
	}
	_, err := coll.InsertOne(ctx, bson.M{"_id": 2})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate insert: err = %v, want duplicate key", err)
	}
	res, err := coll.InsertOne(ctx, bson.M{"name": "generated"})
	if err != nil {
		t.Fatalf("insert without _id: %v", err)
	}
	if _, ok := res.InsertedID.(bson.ObjectID); !ok {
		t.Fatalf("InsertedID = %T, want ObjectID", res.InsertedID)
	}

	var got bson.M
	if err := coll.FindOne(ctx, bson.M{"_id": 2}).Decode(&got); err != nil || got["name"] != "b" {
		t.Fatalf("find by _id: %v %v", got, err)
	}
	if err := coll.FindOne(ctx, bson.M{"tags": "y"}).Decode(&got); err != nil || got["_id"] != int32(2) {
		t.Fatalf("find by array element: %v %v", got, err)
	}
	if err := coll.FindOne(ctx, bson.M{"_id": 42}).Err(); !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("find missing: err = %v", err)
	}
	cur, err := coll.Find(ctx, bson.M{"n": bson.M{"$gte": 2}}, options.Find().SetSort(bson.M{"n": -1}).SetProjection(bson.M{"name": 1}))
	if err != nil {
		t.Fatalf("find range: %v", err)
	}
	var all []bson.M
	if err := cur.All(ctx, &all); err != nil {
		t.Fatalf("cursor: %v", err)
	}
	if len(all) != 2 || all[0]["name"] != "c" || all[1]["name"] != "b" || all[0]["n"] != nil {
		t.Fatalf("find range = %v", all)
	}

	up, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"name": "A", "sub.x": 1}, "$inc": bson.M{"n": 10}})
	if err != nil || up.MatchedCount != 1 || up.ModifiedCount != 1 {
		t.Fatalf("update: %+v %v", up, err)
	}
	if n := value(t, srv, "items", 1, "n"); n.Int32() != 11 {
		t.Fatalf("n after $inc = %v", n)
	}
	if x := value(t, srv, "items", 1, "sub"); x.Document().Lookup("x").Int32() != 1 {
		t.Fatalf("sub after $set sub.x = %v", x)
	}
	up, err = coll.UpdateOne(ctx, bson.M{"_id": 9}, bson.M{"$set": bson.M{"name": "upserted"}}, options.UpdateOne().SetUpsert(true))
	if err != nil || up.UpsertedCount != 1 || up.UpsertedID != int32(9) {
		t.Fatalf("upsert: %+v %v", up, err)
	}
	if _, err := coll.ReplaceOne(ctx, bson.M{"_id": 3}, bson.M{"name": "C"}); err != nil {
		t.Fatalf("replace: %v", err)
	}
	if d, _ := srv.Doc(dbName, "items", 3); d.Lookup("n").Type != 0 || d.Lookup("name").StringValue() != "C" {
		t.Fatalf("after replace: %v", d)
	}
	many, err := coll.UpdateMany(ctx, bson.M{"_id": bson.M{"$in": bson.A{1, 2}}}, bson.M{"$inc": bson.M{"n": 1}})
	if err != nil || many.ModifiedCount != 2 {
		t.Fatalf("update many: %+v %v", many, err)
	}

	var after bson.M
	err = coll.FindOneAndUpdate(ctx, bson.M{"_id": 2}, bson.M{"$inc": bson.M{"n": 1}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&after)
	if err != nil || after["n"] != int32(4) {
		t.Fatalf("findOneAndUpdate: %v %v", after, err)
	}
	n, err := coll.CountDocuments(ctx, bson.M{"n": bson.M{"$exists": true}})
	if err != nil || n != 2 {
		t.Fatalf("count documents = %d, %v", n, err)
	}
	est, err := coll.EstimatedDocumentCount(ctx)
	if err != nil || est != 5 {
		t.Fatalf("estimated count = %d, %v", est, err)
	}
	if err := coll.FindOneAndDelete(ctx, bson.M{"_id": 9}).Err(); err != nil {
		t.Fatalf("findOneAndDelete: %v", err)
	}
	del, err := coll.DeleteMany(ctx, bson.M{"name": bson.M{"$in": bson.A{"C", "generated"}}})
	if err != nil || del.DeletedCount != 2 {
		t.Fatalf("delete many: %+v %v", del, err)
	}
	if got := len(srv.Docs(dbName, "items")); got != 2 {
		t.Fatalf("%d documents left, want 2", got)
	}
	if err := coll.Drop(ctx); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if got := len(srv.Docs(dbName, "items")); got != 0 {
		t.Fatalf("%d documents after drop", got)
	}
}

func TestUnknownCommand(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	err := connect(t, srv).Database(dbName).RunCommand(ctx, doc("frobnicate", 1)).Err()
	if se := serverError(t, err); !se.HasErrorCode(59) {
		t.Fatalf("err = %v, want CommandNotFound (59)", err)
	}
}

func TestTransactionCommit(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	client := connect(t, srv)
	coll := client.Database(dbName).Collection("accounts")
	if _, err := coll.InsertMany(ctx, []any{bson.M{"_id": "a", "bal": 100}, bson.M{"_id": "b", "bal": 0}}); err != nil {
		t.Fatal(err)
	}
	srv.ResetCommands()

	sess, err := client.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(ctx)
	if err := sess.StartTransaction(); err != nil {
		t.Fatal(err)
	}
	sctx := mongo.NewSessionContext(ctx, sess)
	if _, err := coll.UpdateOne(sctx, bson.M{"_id": "a"}, bson.M{"$inc": bson.M{"bal": -30}}); err != nil {
		t.Fatalf("debit: %v", err)
	}
	if _, err := coll.UpdateOne(sctx, bson.M{"_id": "b"}, bson.M{"$inc": bson.M{"bal": 30}}); err != nil {
		t.Fatalf("credit: %v", err)
	}
	if _, err := coll.InsertOne(sctx, bson.M{"_id": "log1", "amount": 30}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	// The transaction reads its own writes; nobody else does yet.
	var a bson.M
	if err := coll.FindOne(sctx, bson.M{"_id": "a"}).Decode(&a); err != nil || a["bal"] != int32(70) {
		t.Fatalf("read own write: %v %v", a, err)
	}
	if err := coll.FindOne(ctx, bson.M{"_id": "a"}).Decode(&a); err != nil || a["bal"] != int32(100) {
		t.Fatalf("outside read during transaction: %v %v", a, err)
	}
	if _, ok := srv.Doc(dbName, "accounts", "log1"); ok {
		t.Fatal("uncommitted insert visible")
	}
	if srv.OpenTransactions() != 1 {
		t.Fatalf("OpenTransactions = %d", srv.OpenTransactions())
	}
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got := value(t, srv, "accounts", "a", "bal").Int32(); got != 70 {
		t.Fatalf("a = %d after commit", got)
	}
	if got := value(t, srv, "accounts", "b", "bal").Int32(); got != 30 {
		t.Fatalf("b = %d after commit", got)
	}
	if _, ok := srv.Doc(dbName, "accounts", "log1"); !ok {
		t.Fatal("committed insert missing")
	}
	if srv.OpenTransactions() != 0 {
		t.Fatalf("OpenTransactions = %d after commit", srv.OpenTransactions())
	}

	// The log shows one transaction number, started by the first command.
	var txnCmds []mongotest.Command
	for _, c := range srv.Commands() {
		if c.InTransaction {
			txnCmds = append(txnCmds, c)
		}
	}
	want := []string{"update", "update", "insert", "find", "commitTransaction"}
	if !slices.Equal(namesOf(txnCmds), want) {
		t.Fatalf("transaction commands = %v, want %v", txnCmds, want)
	}
	id := mongotest.SessionID(sess.ID())
	for i, c := range txnCmds {
		if c.SessionID != id || !c.HasTxnNumber || c.TxnNumber != txnCmds[0].TxnNumber || c.StartTransaction != (i == 0) {
			t.Errorf("command %v: session %s, want %s and one txnNumber started by the first", c, c.SessionID, id)
		}
	}
	if txnCmds[0].Collection != "accounts" || txnCmds[0].Database != dbName {
		t.Errorf("first command names %s.%s", txnCmds[0].Database, txnCmds[0].Collection)
	}

	// Committing the same transaction number again succeeds, as in MongoDB.
	srv.ResetCommands()
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("second commit: %v", err)
	}
	if names := srv.CommandNames(); !slices.Equal(names, []string{"commitTransaction"}) {
		t.Fatalf("second commit sent %v", names)
	}
	if got := value(t, srv, "accounts", "a", "bal").Int32(); got != 70 {
		t.Fatalf("a = %d after second commit", got)
	}
}

func TestTransactionAbort(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 1})
	sess, err := client.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.EndSession(ctx)
	if err := sess.StartTransaction(); err != nil {
		t.Fatal(err)
	}
	sctx := mongo.NewSessionContext(ctx, sess)
	if _, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(sctx, bson.M{"_id": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.InsertOne(sctx, bson.M{"_id": 2}); err != nil {
		t.Fatal(err)
	}
	if err := sess.AbortTransaction(ctx); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if got := value(t, srv, "c", 1, "v").Int32(); got != 1 {
		t.Fatalf("v = %d after abort", got)
	}
	if _, ok := srv.Doc(dbName, "c", 2); ok {
		t.Fatal("aborted insert visible")
	}
	if srv.OpenTransactions() != 0 {
		t.Fatalf("OpenTransactions = %d after abort", srv.OpenTransactions())
	}
	// The document is free again for a write outside a transaction.
	if _, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 3}}); err != nil {
		t.Fatal(err)
	}
}

// startTxn starts a transaction on a new session of client and returns the
// session context.
func startTxn(t *testing.T, ctx context.Context, client *mongo.Client) (*mongo.Session, context.Context) {
	t.Helper()
	sess, err := client.StartSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.EndSession(context.Background()) })
	if err := sess.StartTransaction(); err != nil {
		t.Fatal(err)
	}
	return sess, mongo.NewSessionContext(ctx, sess)
}

func TestConcurrentSessionsWriteConflict(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	c1, c2 := connect(t, srv), connect(t, srv)
	if _, err := c1.Database(dbName).Collection("c").InsertOne(ctx, bson.M{"_id": "k", "v": 0}); err != nil {
		t.Fatal(err)
	}

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
	if winner == nil || loser == nil {
		t.Fatalf("want exactly one conflict, got errors %v and %v", results[0].err, results[1].err)
	}
	se := serverError(t, loser.err)
	if !se.HasErrorCode(112) || !se.HasErrorLabel("TransientTransactionError") {
		t.Fatalf("loser error = %v, want WriteConflict (112) labelled TransientTransactionError", loser.err)
	}
	// The server aborted the loser's transaction.
	err := loser.coll.FindOne(loser.sctx, bson.M{"_id": "k"}).Err()
	if se := serverError(t, err); !se.HasErrorCode(251) || !se.HasErrorLabel("TransientTransactionError") {
		t.Fatalf("command after conflict: %v, want NoSuchTransaction (251) labelled TransientTransactionError", err)
	}
	if err := loser.sess.AbortTransaction(ctx); err != nil {
		t.Fatalf("abort after conflict: %v", err)
	}
	if err := winner.sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("winner commit: %v", err)
	}
	if got := value(t, srv, "c", "k", "v").AsInt64(); got != int64(winner.who) {
		t.Fatalf("v = %d, want the winner's %d", got, winner.who)
	}
	var conflicts int
	for _, c := range srv.Commands() {
		if c.ErrorCode == 112 {
			conflicts++
			if !slices.Contains(c.ErrorLabels, "TransientTransactionError") {
				t.Errorf("logged conflict without label: %v", c)
			}
		}
	}
	if conflicts != 1 {
		t.Fatalf("%d conflicts logged, want 1", conflicts)
	}
}

func TestSnapshotIsolationAndCommittedAfterSnapshotConflict(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 1})
	sess, sctx := startTxn(t, ctx, client)
	var d bson.M
	if err := coll.FindOne(sctx, bson.M{"_id": 1}).Decode(&d); err != nil || d["v"] != int32(1) {
		t.Fatalf("first read: %v %v", d, err)
	}
	// A write outside the transaction commits after its snapshot.
	if _, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}}); err != nil {
		t.Fatal(err)
	}
	mustInsert(t, ctx, coll, bson.M{"_id": 2})
	if err := coll.FindOne(sctx, bson.M{"_id": 1}).Decode(&d); err != nil || d["v"] != int32(1) {
		t.Fatalf("snapshot read: %v %v, want v 1", d, err)
	}
	if err := coll.FindOne(sctx, bson.M{"_id": 2}).Err(); !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("document inserted after the snapshot: %v", err)
	}
	_, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 10}})
	if se := serverError(t, err); !se.HasErrorCode(112) || !se.HasErrorLabel("TransientTransactionError") {
		t.Fatalf("write after a newer commit: %v, want WriteConflict", err)
	}
	_ = sess.AbortTransaction(ctx)
	if got := value(t, srv, "c", 1, "v").Int32(); got != 2 {
		t.Fatalf("v = %d", got)
	}
}

func TestWriteOutsideTransactionWaitsForLock(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "v": 0})
	sess, sctx := startTxn(t, ctx, client)
	if _, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 1}}); err != nil {
		t.Fatal(err)
	}
	srv.ResetCommands()
	done := make(chan error, 1)
	go func() {
		_, err := coll.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$set": bson.M{"v": 2}})
		done <- err
	}()
	// Wait until the outside update reached the server, then commit.
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(srv.CommandNames(), "update") {
		if time.Now().After(deadline) {
			t.Fatal("outside update never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("outside update finished while the transaction held the lock: %v", err)
	default:
	}
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("outside update: %v", err)
	}
	if got := value(t, srv, "c", 1, "v").Int32(); got != 2 {
		t.Fatalf("v = %d, want 2 (the waiting write applies after the commit)", got)
	}
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
		if err := srv.SetFailPoint(fp); err == nil {
			t.Errorf("SetFailPoint(%+v) succeeded", fp)
		}
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
	if err != nil {
		t.Fatalf("configureFailPoint: %v", err)
	}
	sess, _ := insertInTxn(t, ctx, client, coll)
	srv.ResetCommands()
	err = sess.CommitTransaction(ctx)
	se := serverError(t, err)
	if !se.HasErrorCode(50) || !se.HasErrorLabel("UnknownTransactionCommitResult") {
		t.Fatalf("commit: %v, want MaxTimeMSExpired labelled UnknownTransactionCommitResult", err)
	}
	if _, ok := srv.Doc(dbName, "c", 1); ok {
		t.Fatal("failed commit was applied")
	}
	if srv.OpenTransactions() != 1 {
		t.Fatal("failed commit ended the transaction")
	}
	// Retrying only the commit commits the transaction.
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit retry: %v", err)
	}
	if _, ok := srv.Doc(dbName, "c", 1); !ok {
		t.Fatal("retried commit not applied")
	}
	cmds := srv.Commands()
	if names := namesOf(cmds); !slices.Equal(names, []string{"commitTransaction", "commitTransaction"}) {
		t.Fatalf("commands = %v, want only commitTransaction twice", cmds)
	}
	if cmds[0].TxnNumber != cmds[1].TxnNumber || cmds[0].SessionID != cmds[1].SessionID || !cmds[0].FailPoint || cmds[1].FailPoint {
		t.Fatalf("commits = %v", cmds)
	}

	// configureFailPoint outside admin is refused, like MongoDB.
	err = client.Database(dbName).RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err()
	if se := serverError(t, err); !se.HasErrorCode(13) {
		t.Fatalf("configureFailPoint on %s: %v", dbName, err)
	}
	if err := admin.RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err(); err != nil {
		t.Fatalf("mode off: %v", err)
	}
}

func TestConfigureFailPointAlwaysOnAndOff(t *testing.T) {
	_, ctx, client, coll := setup(t)
	admin := client.Database("admin")
	err := admin.RunCommand(ctx, doc(
		"configureFailPoint", "failCommand",
		"mode", "alwaysOn",
		"data", doc("failCommands", bson.A{"find"}, "errorCode", 388),
	)).Err()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		err := coll.FindOne(ctx, bson.M{}).Err()
		if se := serverError(t, err); !se.HasErrorCode(388) {
			t.Fatalf("find %d: %v", i, err)
		}
	}
	if err := admin.RunCommand(ctx, doc("configureFailPoint", "failCommand", "mode", "off")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := coll.FindOne(ctx, bson.M{}).Err(); !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("find after off: %v", err)
	}
}

func TestFailPointAutomaticLabelsRetryCommit(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	// ShutdownInProgress without explicit labels: the server labels it
	// RetryableWriteError and the driver retries the commit once.
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 1, ErrorCode: 91})
	srv.ResetCommands()
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cmds := srv.Commands()
	if names := namesOf(cmds); !slices.Equal(names, []string{"commitTransaction", "commitTransaction"}) {
		t.Fatalf("commands = %v", cmds)
	}
	if cmds[0].ErrorCode != 91 || !slices.Contains(cmds[0].ErrorLabels, "RetryableWriteError") {
		t.Fatalf("first commit = %v", cmds[0])
	}
	if _, ok := srv.Doc(dbName, "c", 1); !ok {
		t.Fatal("not committed")
	}
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
	if err == nil {
		t.Fatalf("commit succeeded through two dropped connections: %v", srv.Commands())
	}
	if !mongo.IsNetworkError(err) {
		t.Errorf("commit error %v is not a network error", err)
	}
	if se := serverError(t, err); !se.HasErrorLabel("UnknownTransactionCommitResult") {
		t.Errorf("commit error %v lacks UnknownTransactionCommitResult", err)
	}
	if _, ok := srv.Doc(dbName, "c", 1); ok {
		t.Fatal("closeConnection applied the commit")
	}
	cmds := srv.Commands()
	if names := namesOf(cmds); !slices.Equal(names, []string{"commitTransaction", "commitTransaction"}) || !cmds[0].Hangup || !cmds[1].Hangup {
		t.Fatalf("commands = %v", cmds)
	}
	// The fail point is used up; retrying the commit commits.
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit retry: %v", err)
	}
	if _, ok := srv.Doc(dbName, "c", 1); !ok {
		t.Fatal("not committed after retry")
	}
}

func TestCloseConnectionOnceIsRetriedByDriver(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"commitTransaction"}, Times: 1, CloseConnection: true})
	srv.ResetCommands()
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cmds := srv.Commands()
	if names := namesOf(cmds); !slices.Equal(names, []string{"commitTransaction", "commitTransaction"}) || !cmds[0].Hangup || cmds[1].Hangup {
		t.Fatalf("commands = %v", cmds)
	}
	if cmds[0].ConnectionID == cmds[1].ConnectionID {
		t.Fatal("retry used the closed connection")
	}
}

func TestCloseConnectionAfterApplyCommitsOnce(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	mustInsert(t, ctx, coll, bson.M{"_id": 1, "n": 0})
	sess, sctx := startTxn(t, ctx, client)
	if _, err := coll.UpdateOne(sctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	err := client.Database("admin").RunCommand(ctx, doc(
		"configureFailPoint", "failCommand",
		"mode", doc("times", 1),
		"data", doc("failCommands", bson.A{"commitTransaction"}, "closeConnectionAfterApply", true),
	)).Err()
	if err != nil {
		t.Fatal(err)
	}
	srv.ResetCommands()
	// The first commit applies and loses its reply; the driver's retry of
	// the same transaction number succeeds without applying it twice.
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got := value(t, srv, "c", 1, "n").Int32(); got != 1 {
		t.Fatalf("n = %d, want 1", got)
	}
	cmds := srv.Commands()
	if names := namesOf(cmds); !slices.Equal(names, []string{"commitTransaction", "commitTransaction"}) || !cmds[0].Hangup {
		t.Fatalf("commands = %v", cmds)
	}
}

func TestRetryableWriteAppliedOnce(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	coll := connect(t, srv).Database(dbName).Collection("c")
	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"insert"}, Times: 1, CloseConnectionAfterApply: true})
	if _, err := coll.InsertOne(ctx, bson.M{"_id": 1}); err != nil {
		t.Fatalf("insert: %v (the retry must get the first reply, not a duplicate key error)", err)
	}
	cmds := srv.Commands()
	if len(cmds) != 2 || cmds[0].TxnNumber != cmds[1].TxnNumber || !cmds[0].HasTxnNumber || cmds[0].InTransaction {
		t.Fatalf("commands = %v", cmds)
	}
	if got := len(srv.Docs(dbName, "c")); got != 1 {
		t.Fatalf("%d documents", got)
	}
}

func TestWriteConcernErrorOnCommit(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	err := srv.SetFailPoint(mongotest.FailPoint{
		Commands:          []string{"commitTransaction"},
		Times:             1,
		WriteConcernError: &mongotest.WriteConcernError{Code: 64, Message: "waiting for replication timed out"},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = sess.CommitTransaction(ctx)
	if se := serverError(t, err); !se.HasErrorCode(64) || !se.HasErrorLabel("UnknownTransactionCommitResult") {
		t.Fatalf("commit: %v, want WriteConcernFailed labelled UnknownTransactionCommitResult", err)
	}
	// A write concern error reports on replication, not on the commit.
	if _, ok := srv.Doc(dbName, "c", 1); !ok {
		t.Fatal("commit with writeConcernError not applied")
	}
}

func TestFailPointSkipBlockAndAppName(t *testing.T) {
	srv := mongotest.New(t)
	ctx := testContext(t)
	plain := connect(t, srv)
	named := connect(t, srv, options.Client().SetAppName("victim"))

	err := srv.SetFailPoint(mongotest.FailPoint{Commands: []string{"ping"}, ErrorCode: 11600, AppName: "victim", Skip: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Ping(ctx, nil); err != nil {
		t.Fatalf("ping from another app: %v", err)
	}
	if err := named.Ping(ctx, nil); err != nil {
		t.Fatalf("skipped ping: %v", err)
	}
	for i := 0; i < 2; i++ {
		err := named.Database("admin").RunCommand(ctx, doc("ping", 1)).Err()
		if se := serverError(t, err); !se.HasErrorCode(11600) {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	if n := srv.ClearFailPoint(); n != 2 {
		t.Fatalf("fail point acted %d times, want 2", n)
	}

	mustSetFailPoint(t, srv, mongotest.FailPoint{Commands: []string{"ping"}, Times: 1, BlockTime: 30 * time.Millisecond})
	start := time.Now()
	if err := plain.Ping(ctx, nil); err != nil {
		t.Fatalf("blocked ping: %v", err)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("blockTimeMS did not delay the command")
	}
}

func TestNoSuchTransactionAfterLifetime(t *testing.T) {
	srv, ctx, client, coll := setup(t, mongotest.WithTransactionLifetime(50*time.Millisecond))
	sess, _ := insertInTxn(t, ctx, client, coll)
	deadline := time.Now().Add(5 * time.Second)
	for srv.OpenTransactions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("transaction outlived its lifetime")
		}
		time.Sleep(10 * time.Millisecond)
		_ = coll.FindOne(ctx, bson.M{}).Err() // commands reap expired transactions
	}
	err := sess.CommitTransaction(ctx)
	if se := serverError(t, err); !se.HasErrorCode(251) || !se.HasErrorLabel("TransientTransactionError") {
		t.Fatalf("commit of expired transaction: %v", err)
	}
}

func TestDropConnectionsAndClose(t *testing.T) {
	srv, err := mongotest.Start()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	client := connect(t, srv)
	coll := client.Database(dbName).Collection("c")
	mustInsert(t, ctx, coll, bson.M{"_id": 1})
	if srv.DropConnections() == 0 {
		t.Fatal("no connections to drop")
	}
	// Reads are retried by the driver on a new connection.
	if err := coll.FindOne(ctx, bson.M{"_id": 1}).Err(); err != nil {
		t.Fatalf("find after drop: %v", err)
	}
	srv.Close()
	srv.Close()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := coll.FindOne(short, bson.M{"_id": 1}).Err(); err == nil {
		t.Fatal("find succeeded after Close")
	}
}

func TestConcurrentInsertsOfOneID(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	s1, ctx1 := startTxn(t, ctx, client)
	_, ctx2 := startTxn(t, ctx, client)
	if _, err := coll.InsertOne(ctx1, bson.M{"_id": "x", "by": 1}); err != nil {
		t.Fatal(err)
	}
	_, err := coll.InsertOne(ctx2, bson.M{"_id": "x", "by": 2})
	if se := serverError(t, err); !se.HasErrorCode(112) || !se.HasErrorLabel("TransientTransactionError") {
		t.Fatalf("second insert: %v, want WriteConflict", err)
	}
	if err := s1.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	// Once committed, the same insert outside a transaction is a duplicate.
	if _, err := coll.InsertOne(ctx, bson.M{"_id": "x"}); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("insert after commit: %v", err)
	}
	if got := value(t, srv, "c", "x", "by").Int32(); got != 1 {
		t.Fatalf("by = %d", got)
	}
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
		err := admin.RunCommand(ctx, cmd).Err()
		if se := serverError(t, err); !se.HasErrorCode(2) {
			t.Errorf("%v: %v, want BadValue", cmd, err)
		}
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
	if err := sess.CommitTransaction(ctx); err != nil {
		t.Fatalf("commit under a deadline: %v", err)
	}
	if got := len(srv.Commands()); got != 4 {
		t.Fatalf("%d commit attempts, want 4: %v", got, srv.Commands())
	}
}

func TestKillSessionsAbortsOpenTransaction(t *testing.T) {
	srv, ctx, client, coll := setup(t)
	sess, _ := insertInTxn(t, ctx, client, coll)
	if srv.OpenTransactions() != 1 {
		t.Fatal("no open transaction")
	}
	err := client.Database("admin").RunCommand(ctx, doc("killSessions", bson.A{sess.ID()})).Err()
	if err != nil {
		t.Fatalf("killSessions: %v", err)
	}
	if srv.OpenTransactions() != 0 {
		t.Fatal("killSessions left the transaction open")
	}
	err = sess.CommitTransaction(ctx)
	if se := serverError(t, err); !se.HasErrorCode(251) {
		t.Fatalf("commit after killSessions: %v, want NoSuchTransaction", err)
	}
	if _, ok := srv.Doc(dbName, "c", 1); ok {
		t.Fatal("killed transaction committed")
	}
}
