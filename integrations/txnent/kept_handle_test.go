package txnent_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun: the *txnent.Tx fn receives, the one a
// savepoint receives and the contexts fn keeps past its Run (committed or
// rolled back, with and without conflict keys) fail every statement after
// the Run and during a later Run on the same single connection, and none
// of their rows reaches the database; see integrationtest.KeptHandles.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		for name, opts := range map[string][]txn.CallOption{"plain": nil, "Keys": {txn.Keys("k")}} {
			t.Run(name, func(t *testing.T) {
				db := s.suiteDB(t)
				db.db.SetMaxOpenConns(1)
				integrationtest.KeptHandles(t, db, prefix, db.Runner(), opts...)
			})
		}
	})
}

// TestKeptClientNeverWritesAfterRun: an *ent.Client bound to the
// transaction with WithClient, kept past its Run (committed or rolled
// back), fails to create a note and to read notes after the Run and during
// a later Run on the same single connection, and its notes are not in the
// table: only the committed Runs' own are.
func TestKeptClientNeverWritesAfterRun(t *testing.T) {
	errKept := errors.New("fn fails after keeping its client")
	forEach(t, func(t *testing.T, s server) {
		for _, commit := range []bool{true, false} {
			name := "Committed"
			if !commit {
				name = "RolledBack"
			}
			t.Run(name, func(t *testing.T) {
				e := open(t, s)
				e.db.SetMaxOpenConns(1)
				r := e.runner()
				ctx := integrationtest.Context(t)
				var kept *ent.Client
				err := r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
					kept = c
					if err := addNote(ctx, c, "run"); err != nil {
						return err
					}
					if !commit {
						return errKept
					}
					return nil
				}))
				want := []string{"run", "later"}
				if commit {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, errKept)
					want = []string{"later"}
				}
				use := func(when string) {
					assert.Error(t, addNote(ctx, kept, "kept "+when), "%s: create a note with the kept client", when)
					_, err := kept.Note.Query().Count(ctx)
					assert.Error(t, err, "%s: count notes with the kept client", when)
				}
				use("after the Run")
				err = r.Run(ctx, txnent.WithClient(e.client.BindDriver, func(ctx context.Context, c *ent.Client) error {
					use("during a later Run")
					return addNote(ctx, c, "later")
				}))
				require.NoError(t, err, "the later Run")
				assert.Equal(t, want, notes(t, e), "only the committed Runs' own notes: a kept client wrote outside its Run")
			})
		}
	})
}
