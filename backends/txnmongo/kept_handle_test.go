package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

// errKept is the permanent error of the Runs whose fn fails after keeping
// its session.
var errKept = errors.New("fn fails after keeping its session")

// TestKeptSessionNeverWritesAfterRun: the session context and the
// *mongo.Session fn keeps past its Run (committed, or rolled back after
// fn's error; with and without conflict keys) fail every insert and read
// after the Run and during a later Run, and none of their documents is in
// the collection afterwards: only the committed Runs' own documents are.
// The kept context carries no transaction for txn (TxFrom, Savepoint and
// OnCommit refuse it).
func TestKeptSessionNeverWritesAfterRun(t *testing.T) {
	for _, keys := range []bool{false, true} {
		for _, commit := range []bool{true, false} {
			name := "Committed"
			if !commit {
				name = "RolledBack"
			}
			var opts []txn.CallOption
			if keys {
				name += "/Keys"
				opts = append(opts, txn.Keys("k"))
			}
			t.Run(name, func(t *testing.T) {
				eachServer(t, func(t *testing.T, e *env) {
					keptSessionScenario(t, e, commit, opts)
				})
			})
		}
	}
}

func keptSessionScenario(t *testing.T, e *env, commit bool, opts []txn.CallOption) {
	r := txnmongo.New(e.client)
	ctx := e.ctx(t)
	coll := e.coll("c")
	var keptCtx context.Context
	var keptSess *mongo.Session
	err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
		if _, err := coll.InsertOne(ctx, bson.M{"_id": "run-1"}); err != nil {
			return err
		}
		keptCtx, keptSess = ctx, sess
		if !commit {
			return errKept
		}
		return nil
	}, opts...)
	want := []string{"later-run", "run-1"}
	if commit {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, errKept)
		want = []string{"later-run"}
	}

	use := func(when string) {
		handles := map[string]context.Context{
			"fn's context":                   keptCtx,
			"a context bound to the session": mongo.NewSessionContext(ctx, keptSess),
		}
		for name, h := range handles {
			_, err := coll.InsertOne(h, bson.M{"_id": fmt.Sprintf("kept %s %s", name, when)})
			assert.Error(t, err, "%s: InsertOne with %s", when, name)
			_, err = coll.UpdateOne(h, bson.M{"_id": "run-1"}, bson.M{"$set": bson.M{"kept": when}}, nil)
			assert.Error(t, err, "%s: UpdateOne with %s", when, name)
			err = coll.FindOne(h, bson.M{}).Err()
			assert.Error(t, err, "%s: FindOne with %s", when, name)
			assert.False(t, errors.Is(err, mongo.ErrNoDocuments), "%s: FindOne with %s read the collection", when, name)
		}
		_, ok := txn.TxFrom[*mongo.Session](keptCtx)
		assert.False(t, ok, "%s: TxFrom finds a transaction in fn's kept context", when)
		assert.ErrorIs(t, txn.OnCommit(keptCtx, func() {}), txn.ErrNoTransaction, "%s: OnCommit", when)
		assert.ErrorIs(t, txn.Savepoint(keptCtx, func(context.Context, *mongo.Session) error { return nil }), txn.ErrNoTransaction, "%s: Savepoint", when)
	}
	use("after the Run")
	err = r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
		use("during a later Run")
		_, err := coll.InsertOne(ctx, bson.M{"_id": "later-run"})
		return err
	}, opts...)
	require.NoError(t, err, "the later Run")

	var got []string
	for _, d := range e.find(t, "c", bson.M{}) {
		got = append(got, fmt.Sprint(d["_id"]))
	}
	assert.Equal(t, want, got, "only the committed Runs' own documents: a kept session wrote outside its Run")
	for _, d := range e.find(t, "c", bson.M{"kept": bson.M{"$exists": true}}) {
		t.Errorf("a kept session updated %v outside its Run", d)
	}
}

// TestKeptAttemptSessionNeverWritesIntoALaterAttempt: fn's context and
// session from an attempt that failed (a conflict, retried) refuse every
// operation during the next attempt of the same Run and after the Run; a
// write through them never lands in the next attempt's transaction, which
// commits, nor outside it. Only the committed attempt's document is in the
// collection afterwards.
func TestKeptAttemptSessionNeverWritesIntoALaterAttempt(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		r := txnmongo.New(e.client)
		ctx := e.ctx(t)
		coll := e.coll("c")
		var (
			firstCtx  context.Context
			firstSess *mongo.Session
			attempts  int
		)
		use := func(when string) {
			for name, h := range map[string]context.Context{
				"fn's context":                   firstCtx,
				"a context bound to the session": mongo.NewSessionContext(ctx, firstSess),
			} {
				_, err := coll.InsertOne(h, bson.M{"_id": fmt.Sprintf("first attempt's %s %s", name, when)})
				assert.Error(t, err, "%s: InsertOne with the first attempt's %s", when, name)
				_, err = coll.UpdateOne(h, bson.M{"_id": "first"}, bson.M{"$set": bson.M{"kept": when}})
				assert.Error(t, err, "%s: UpdateOne with the first attempt's %s", when, name)
			}
		}
		err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
			attempts++
			if attempts == 1 {
				firstCtx, firstSess = ctx, sess
				if _, err := coll.InsertOne(ctx, bson.M{"_id": "first"}); err != nil {
					return err
				}
				return txn.Retry(errors.New("conflict"))
			}
			use("during the next attempt")
			_, err := coll.InsertOne(ctx, bson.M{"_id": "second"})
			return err
		})
		require.NoError(t, err)
		require.Equal(t, 2, attempts)
		use("after the Run")
		var got []string
		for _, d := range e.find(t, "c", bson.M{}) {
			got = append(got, fmt.Sprint(d["_id"]))
		}
		assert.Equal(t, []string{"second"}, got, "only the committed attempt's document")
	})
}
