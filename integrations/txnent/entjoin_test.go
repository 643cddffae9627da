package txnent_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestJoinedTxHooksRunPerAttempt records what the README says of a
// client.Tx inside fn: its Commit runs the generated tx.OnCommit hooks at
// once, in every attempt, also one that is retried, while txn.OnCommit
// runs once after the Run's COMMIT; its Rollback undoes nothing.
func TestJoinedTxHooksRunPerAttempt(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		ctx := integrationtest.Context(t)
		e := open(t, s)
		var entHook, txnHook atomic.Int32
		attempts := 0
		err := e.runner().Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			attempts++
			etx, err := c.Tx(ctx)
			require.NoError(t, err)
			etx.OnCommit(func(next ent.Committer) ent.Committer {
				return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
					entHook.Add(1)
					return next.Commit(ctx, tx)
				})
			})
			require.NoError(t, etx.Note.Create().SetText("kept").Exec(ctx))
			require.NoError(t, etx.Commit())
			rtx, err := c.Tx(ctx)
			require.NoError(t, err)
			require.NoError(t, rtx.Note.Create().SetText("rolled back?").Exec(ctx))
			require.NoError(t, rtx.Rollback())
			require.NoError(t, txn.OnCommit(ctx, func() { txnHook.Add(1) }))
			if attempts == 1 {
				return txn.Retry(errors.New("again"))
			}
			return nil
		}))
		require.NoError(t, err)
		assert.Equal(t, int32(2), entHook.Load(), "ent's hook ran in both attempts")
		assert.Equal(t, int32(1), txnHook.Load())
		assert.Equal(t, []string{"kept", "rolled back?"}, notes(t, e), "the joined Rollback undid nothing")
	})
}
