package txnmongo_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/txntest"
)

// txntest on MongoDB: a fault before COMMIT or at COMMIT aborts the
// transaction, with the update of fn and of a nested Run (which joins it),
// and the retry commits once; a fault after a real commitTransaction
// returns ErrCommitUnknown, with the work committed, and re-runs fn only
// for an Idempotent call.
func TestTxntestFaults(t *testing.T) {
	eachServer(t, func(t *testing.T, e *env) {
		e.insert(t, "acct", bson.M{"_id": 1, "v": 0, "nested": 0})
		r := txnmongo.New(e.client, txn.WithBackoff(txn.Constant(0)))
		acct := e.coll("acct")
		inc := func(calls *int) func(ctx context.Context, sess *mongo.Session) error {
			return func(ctx context.Context, sess *mongo.Session) error {
				*calls++
				if _, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"v": 1}}); err != nil {
					return err
				}
				return r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
					_, err := acct.UpdateOne(ctx, bson.M{"_id": 1}, bson.M{"$inc": bson.M{"nested": 1}})
					return err
				})
			}
		}
		value := func(t *testing.T, key string) int64 { return intField(t, e.find(t, "acct", bson.M{"_id": 1})[0], key) }

		want := int64(0)
		for _, at := range []txn.InterceptPoint{txn.InterceptBeforeCommit, txn.InterceptCommit} {
			t.Run(at.String(), func(t *testing.T) {
				rec := &txntest.Recorder{}
				calls := 0
				err := r.WithInterceptor(txntest.Fail(at, 1)).Run(e.ctx(t), inc(&calls), txn.WithObserver(rec))
				require.NoError(t, err, "Run")
				want++
				require.Equal(t, 2, calls, "fn runs")
				require.Equal(t, want, value(t, "v"), "v")
				require.Equal(t, want, value(t, "nested"), "nested")
				require.Equal(t, "attempt 1, retry retryable, attempt 2, committed", rec.String(), "events")
			})
		}

		t.Run("unknown outcome", func(t *testing.T) {
			faulty := r.WithInterceptor(txntest.Fail(txn.InterceptAfterCommit, 1))
			calls := 0
			err := faulty.Run(e.ctx(t), inc(&calls))
			want++
			require.ErrorIs(t, err, txn.ErrCommitUnknown)
			require.Equal(t, 1, calls, "fn runs")
			require.Equal(t, want, value(t, "v"), "v")

			calls = 0
			err = faulty.Run(e.ctx(t), inc(&calls), txn.Idempotent())
			want += 2
			require.NoError(t, err, "idempotent")
			require.Equal(t, 2, calls, "fn runs of the idempotent call")
			require.Equal(t, want, value(t, "v"), "v after the idempotent call")
		})
	})
}
