package txn_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

// attemptDB is the fake database whose transaction also travels in fn's
// context, as a MongoDB session does.
type attemptDB struct {
	*fakedb.DB
	scoped []*fakedb.Tx // the transactions AttemptContext was called with
}

type attemptKey struct{}

func (a *attemptDB) AttemptContext(ctx context.Context, tx *fakedb.Tx) context.Context {
	a.scoped = append(a.scoped, tx)
	return context.WithValue(ctx, attemptKey{}, tx)
}

// TestAttemptContext: on every attempt, fn's context is the one the
// backend's AttemptContext derived for that attempt's transaction, still
// carrying the transaction for txn (TxFrom, nested Run); a context kept
// from an earlier attempt carries the earlier transaction, never the
// current one.
func TestAttemptContext(t *testing.T) {
	db := &attemptDB{DB: fakedb.New()}
	r := txn.New[*fakedb.Tx](db, txn.WithClock(newClock(db.DB)), txn.Seed(1))
	require.NoError(t, r.Err())
	var seen []*fakedb.Tx
	var first context.Context
	err := r.Run(context.Background(), func(ctx context.Context, tx *fakedb.Tx) error {
		seen = append(seen, tx)
		assert.Same(t, tx, ctx.Value(attemptKey{}), "fn's context carries its own attempt's transaction")
		got, ok := txn.TxFrom[*fakedb.Tx](ctx)
		require.True(t, ok)
		assert.Same(t, tx, got)
		require.NoError(t, r.Run(ctx, func(inner context.Context, itx *fakedb.Tx) error {
			assert.Same(t, tx, itx, "a nested Run joins")
			assert.Same(t, tx, inner.Value(attemptKey{}))
			return nil
		}))
		if first == nil {
			first = ctx
			return errConflict
		}
		assert.Same(t, seen[0], first.Value(attemptKey{}), "the first attempt's context still names the first transaction")
		assert.NotSame(t, tx, first.Value(attemptKey{}))
		return nil
	})
	require.NoError(t, err)
	require.Len(t, seen, 2)
	assert.Equal(t, seen, db.scoped, "AttemptContext is called once per attempt, with that attempt's transaction")
}
