package txnmongo_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// TestRunInOnCommitStartsNewTransaction: a Run started from an OnCommit
// callback with fn's context does not join the ended transaction (on
// MongoDB, which has no savepoints, it used to join outright and write on
// a session whose transaction was over): it starts a new transaction, on a
// session of its own, and commits it. TxFrom, OnCommit and Savepoint see
// no transaction in that context.
func TestRunInOnCommitStartsNewTransaction(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client, txn.WithClock(newClock()))
		coll := e.coll("c")
		var outerID, innerID string
		var txFromOK bool
		var onCommitErr, savepointErr, runErr error
		err := r.Run(e.ctx(t), func(ctx context.Context, sess *mongo.Session) error {
			outerID = sessionID(sess)
			if _, err := coll.InsertOne(ctx, bson.M{"_id": "order"}); err != nil {
				return err
			}
			return txn.OnCommit(ctx, func() {
				_, txFromOK = txn.TxFrom[*mongo.Session](ctx)
				onCommitErr = txn.OnCommit(ctx, func() {})
				savepointErr = txn.Savepoint(ctx, func(context.Context, *mongo.Session) error { return nil })
				runErr = r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
					innerID = sessionID(sess)
					_, err := coll.InsertOne(ctx, bson.M{"_id": "audit"})
					return err
				})
			})
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if txFromOK {
			t.Error("TxFrom found the ended transaction")
		}
		if !errors.Is(onCommitErr, txn.ErrNoTransaction) || !errors.Is(savepointErr, txn.ErrNoTransaction) {
			t.Errorf("OnCommit returned %v, Savepoint %v; want ErrNoTransaction", onCommitErr, savepointErr)
		}
		if runErr != nil {
			t.Fatalf("Run in the callback: %v", runErr)
		}
		if innerID == "" || innerID == outerID {
			t.Errorf("the Run in the callback used session %q, the ended Run %q; want a session of its own", innerID, outerID)
		}
		checkCommands(t, e, innerID, "insert#1 start", "commitTransaction#1")
		if docs := e.find(t, "c", bson.M{}); len(docs) != 2 {
			t.Fatalf("documents = %v", docs)
		}
	})
}
