package txn_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakedb"
)

// TestAnyTx: AnyTx returns the innermost live transaction's handle,
// untyped: none outside a Run or on a context kept past it, fn's handle
// inside, the savepoint's inside a nested Run, and the outer one again once
// the nested Run ended.
func TestAnyTx(t *testing.T) {
	ctx := context.Background()
	_, ok := txn.AnyTx(ctx)
	assert.False(t, ok, "no Run")
	//nolint:staticcheck // a nil context is bad input
	_, ok = txn.AnyTx(nil) //lint:ignore SA1012 testing nil
	assert.False(t, ok, "nil context")

	r := txn.New[*fakedb.Tx](fakedb.New().WithSavepoints())
	var kept context.Context
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *fakedb.Tx) error {
		kept = ctx
		h, ok := txn.AnyTx(ctx)
		require.True(t, ok)
		assert.Same(t, tx, h)
		require.NoError(t, r.Run(ctx, func(ictx context.Context, itx *fakedb.Tx) error {
			h, ok := txn.AnyTx(ictx)
			require.True(t, ok)
			assert.Same(t, itx, h, "the savepoint's handle")
			return nil
		}))
		h, ok = txn.AnyTx(ctx)
		require.True(t, ok)
		assert.Same(t, tx, h)
		return nil
	}))
	_, ok = txn.AnyTx(kept)
	assert.False(t, ok, "a context kept past its Run carries no transaction")
}
