package txnent_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestScenarios runs the shared scenarios (see integrationtest.RunAll) on
// PostgreSQL, MariaDB and SQLite: statements and raw SAVEPOINT statements
// run on ent's transaction.
func TestScenarios(t *testing.T) {
	var dbs []integrationtest.Opener[*txnent.Tx]
	for _, s := range servers {
		dbs = append(dbs, integrationtest.Opener[*txnent.Tx]{Name: s.Name, Open: func(t *testing.T) integrationtest.DB[*txnent.Tx] { return s.suiteDB(t) }})
	}
	integrationtest.RunAll(t, prefix, dbs)
}

// TestCommitBoundedThroughSilentLink: a COMMIT that the link never
// delivers ends with txn.ErrCommitUnknown at the caller's deadline; see
// integrationtest.CommitBoundedThroughSilentLink.
func TestCommitBoundedThroughSilentLink(t *testing.T) {
	integrationtest.CommitBoundedOnPostgresAndMariaDB(t, prefix,
		func(t *testing.T, dsn string) integrationtest.DB[*txnent.Tx] { return pgServer.suiteDBAt(t, dsn) },
		func(t *testing.T, dsn string) integrationtest.DB[*txnent.Tx] { return mysqlServer.suiteDBAt(t, dsn) })
}

// TestNestedWithClientRollsBackToSavepoint: a nested Run whose fn fails with a
// permanent error is rolled back to its savepoint (raw SAVEPOINT statements
// on ent's transaction), with its OnCommit callbacks; the outer transaction
// goes on and commits the rest, and each kept callback runs once. The
// nested Runs use WithClient.
func TestNestedWithClientRollsBackToSavepoint(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		ctx := integrationtest.Context(t)
		e := open(t, s)
		r := e.runner()
		errRefused := errors.New("inner refused")
		var outer, kept, undone atomic.Int32
		err := r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			if err := addNote(ctx, c, "outer"); err != nil {
				return err
			}
			require.NoError(t, txn.OnCommit(ctx, func() { outer.Add(1) }))
			err := r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
				if err := addNote(ctx, c, "inner-undone"); err != nil {
					return err
				}
				if err := c.Account.UpdateOneID(1).AddBalance(1000).Exec(ctx); err != nil {
					return err
				}
				require.NoError(t, txn.OnCommit(ctx, func() { undone.Add(1) }))
				return errRefused
			}))
			require.ErrorIs(t, err, errRefused)
			return r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
				require.NoError(t, txn.OnCommit(ctx, func() { kept.Add(1) }))
				return addNote(ctx, c, "inner-kept")
			}))
		}))
		require.NoError(t, err)
		assert.Equal(t, []string{"outer", "inner-kept"}, notes(t, e))
		assert.Equal(t, int64(0), balance(t, e, 1), "the undone savepoint's update is gone")
		assert.Equal(t, int32(1), outer.Load())
		assert.Equal(t, int32(1), kept.Load())
		assert.Equal(t, int32(0), undone.Load(), "a rolled-back savepoint's callback never runs")
	})
}

// TestBuildersJoin: ent's builders open "a transaction" of their own for
// multi-statement operations and the generated client's Tx does too; on a
// bound client both join the Run's transaction, so a failure after them
// undoes their work with the rest.
func TestBuildersJoin(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		ctx := integrationtest.Context(t)
		e := open(t, s)
		r := e.runner()
		errLater := errors.New("later failure")
		err := r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			etx, err := c.Tx(ctx)
			require.NoError(t, err)
			require.NoError(t, etx.Note.Create().SetText("via ent Tx").Exec(ctx))
			require.NoError(t, etx.Commit(), "joined: the commit is Run's")
			require.NoError(t, c.Note.CreateBulk(c.Note.Create().SetText("a"), c.Note.Create().SetText("b")).Exec(ctx))
			return errLater
		}))
		require.ErrorIs(t, err, errLater)
		assert.Empty(t, notes(t, e))
	})
}

// TestBoundClientKeepsHooks: BindDriver copies the client's configuration,
// so a hook registered with client.Use sees the bound client's mutations.
func TestBoundClientKeepsHooks(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		ctx := integrationtest.Context(t)
		e := open(t, s)
		var seen atomic.Int32
		e.client.Use(func(next ent.Mutator) ent.Mutator {
			return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
				seen.Add(1)
				return next.Mutate(ctx, m)
			})
		})
		r := e.runner()
		require.NoError(t, r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			return addNote(ctx, c, "hooked")
		})))
		assert.Equal(t, int32(1), seen.Load())
		assert.Equal(t, []string{"hooked"}, notes(t, e))
	})
}

// TestOptionsAndNil covers the adapter's own input checks.
func TestOptionsAndNil(t *testing.T) {
	ctx := context.Background()
	fn := func(context.Context, *txnent.Tx) error { return nil }
	require.ErrorIs(t, txnent.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	forEach(t, func(t *testing.T, s server) {
		e := s.suiteDB(t)
		require.NoError(t, txnent.New(e.drv).Run(ctx, fn))
		r := e.runner()
		require.ErrorIs(t, r.WithBegin(txn.NewBeginOption[*txnent.Tx]("other", 42)).Run(ctx, fn), txn.ErrBadOption)
		ro := sql.TxOptions{ReadOnly: true}
		require.NoError(t, r.WithBegin(txnent.TxOptions(ro)).Run(ctx, fn))
		require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *txnent.Tx) error {
			assert.Equal(t, e.drv.Dialect(), tx.Dialect())
			return tx.Close()
		}))
	})
}

// TestClassify covers the connection rule under every classifier.
func TestClassify(t *testing.T) {
	assert.Equal(t, txn.ClassPermanent, txnent.Classify(nil))
	assert.Equal(t, txn.ClassPermanent, txnent.Classify(errors.New("x")))
	assert.Equal(t, txn.ClassConnLost, txnent.Classify(fmt.Errorf("w: %w", driver.ErrBadConn)))
}
