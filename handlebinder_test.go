package txn_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
)

// boundTx is a handle that carries a context, as a *gorm.DB does.
type boundTx struct {
	ctx   context.Context
	level int
}

// binderBackend begins boundTx handles, with savepoints, and binds each
// handle to the context fn receives.
type binderBackend struct{ binds int }

func (*binderBackend) Begin(context.Context, []txn.BeginOption[*boundTx]) (*boundTx, error) {
	return &boundTx{}, nil
}
func (*binderBackend) Commit(context.Context, *boundTx) error   { return nil }
func (*binderBackend) Rollback(context.Context, *boundTx) error { return nil }
func (*binderBackend) Classify(error) txn.Class                 { return txn.ClassPermanent }
func (*binderBackend) BeginSavepoint(_ context.Context, tx *boundTx, _ string) (*boundTx, error) {
	return &boundTx{level: tx.level + 1}, nil
}
func (*binderBackend) ReleaseSavepoint(context.Context, *boundTx, string) error    { return nil }
func (*binderBackend) RollbackToSavepoint(context.Context, *boundTx, string) error { return nil }
func (b *binderBackend) BindHandle(ctx context.Context, tx *boundTx) *boundTx {
	b.binds++
	return &boundTx{ctx: ctx, level: tx.level}
}

// TestHandleBinderBindsEveryLevel: the handle fn receives, and a nested
// Run's, is bound to the context that fn receives, so a callback registered
// through the handle's context belongs to its level: one registered in a
// savepoint that rolls back never runs.
func TestHandleBinderBindsEveryLevel(t *testing.T) {
	b := &binderBackend{}
	r := txn.New[*boundTx](b)
	errInner := errors.New("inner")
	var ran []string
	err := r.Run(context.Background(), func(ctx context.Context, tx *boundTx) error {
		require.Same(t, ctx, tx.ctx, "the outer handle carries fn's ctx")
		got, ok := txn.TxFrom[*boundTx](ctx)
		require.True(t, ok)
		assert.Same(t, tx, got, "TxFrom returns the bound handle")
		require.NoError(t, txn.OnCommit(tx.ctx, func() { ran = append(ran, "outer") }))
		err := r.Run(ctx, func(ctx context.Context, tx *boundTx) error {
			require.Same(t, ctx, tx.ctx, "the nested handle carries the nested fn's ctx")
			assert.Equal(t, 1, tx.level)
			require.NoError(t, txn.OnCommit(tx.ctx, func() { ran = append(ran, "undone") }))
			return errInner
		})
		require.ErrorIs(t, err, errInner)
		return txn.Savepoint(ctx, func(ctx context.Context, tx *boundTx) error {
			require.Same(t, ctx, tx.ctx)
			return txn.OnCommit(tx.ctx, func() { ran = append(ran, "kept") })
		})
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"outer", "kept"}, ran)
	assert.Equal(t, 3, b.binds)
}
