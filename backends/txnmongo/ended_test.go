package txnmongo_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		require.NoError(t, err, "Run")
		assert.False(t, txFromOK, "TxFrom found the ended transaction")
		assert.ErrorIs(t, onCommitErr, txn.ErrNoTransaction, "OnCommit in the callback")
		assert.ErrorIs(t, savepointErr, txn.ErrNoTransaction, "Savepoint in the callback")
		require.NoError(t, runErr, "Run in the callback")
		assert.NotEmpty(t, innerID, "the Run in the callback has a session")
		assert.NotEqual(t, outerID, innerID, "the Run in the callback has a session of its own, not the ended Run's")
		checkCommands(t, e, innerID, "insert#1 start", "commitTransaction#1")
		assert.Len(t, e.find(t, "c", bson.M{}), 2, "documents")
	})
}
