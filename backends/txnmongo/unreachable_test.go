package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// TestUnreachableReplicaSetCostsOneServerSelection: against a replica set
// where nothing listens, each Run of a default Runner runs fn once, whose
// first operation waits one server selection and fails; Run then returns
// an error matching txn.ErrUnavailable that says fn ran once and the
// database could not be reached once, instead of selecting a server
// MaxAttempts times.
func TestUnreachableReplicaSetCostsOneServerSelection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	const selection = 200 * time.Millisecond
	client := connect(t, fmt.Sprintf("mongodb://%s/?replicaSet=rs0&serverSelectionTimeoutMS=%d", addr, selection.Milliseconds()))
	r := txnmongo.New(client)
	coll := client.Database("txnmongo").Collection("unreachable")
	for i := 0; i < 3; i++ {
		calls := 0
		start := time.Now()
		err := r.Run(context.Background(), func(ctx context.Context, sess *mongo.Session) error {
			calls++
			_, err := coll.InsertOne(ctx, bson.D{{Key: "i", Value: i}})
			return err
		})
		elapsed := time.Since(start)
		require.ErrorIs(t, err, txn.ErrUnavailable)
		var gu *txn.GiveUpError
		require.True(t, errors.As(err, &gu))
		assert.Equal(t, 1, calls, "fn ran once")
		assert.Equal(t, 1, gu.Attempts)
		assert.Equal(t, 1, gu.Unreachable)
		assert.Contains(t, err.Error(), "fn ran 1 time and the database could not be reached 1 time")
		t.Logf("Run %d returned after %v: %v", i+1, elapsed.Round(time.Millisecond), err)
	}
}
