package txnsql_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// TestBeginDetached: begin's context carries ctx's values and is canceled
// by ctx only while begin runs; when ctx ends during begin, what began is
// rolled back and the error wraps ctx's.
func TestBeginDetached(t *testing.T) {
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	defer cancel()
	var bctx context.Context
	tx, err := txnsql.BeginDetached(ctx, "lib", func(c context.Context) (int, error) {
		bctx = c
		return 7, nil
	}, func(int) error { t.Fatal("rolled back a transaction that began in time"); return nil })
	require.NoError(t, err)
	assert.Equal(t, 7, tx)
	assert.Equal(t, "v", bctx.Value(key{}))
	cancel()
	assert.NoError(t, bctx.Err(), "ctx ending after BEGIN does not reach the transaction")

	ctx2, cancel2 := context.WithCancel(context.Background())
	rolledBack := make(chan int, 1)
	_, err = txnsql.BeginDetached(ctx2, "lib", func(c context.Context) (int, error) {
		cancel2()
		<-c.Done() // ctx ending during BEGIN cancels it
		return 8, nil
	}, func(tx int) error { rolledBack <- tx; return nil })
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "lib: begin")
	assert.Equal(t, 8, <-rolledBack)
}

// TestBeginDetachedDoesNotWaitForRollback: when ctx ends as BEGIN
// succeeds, the rollback of what began does not hold the caller, whose
// deadline has passed: over a connection gone silent it would never
// return. It still runs, and finishes when its connection answers.
func TestBeginDetachedDoesNotWaitForRollback(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	rolledBack := make(chan int, 1)
	returned := make(chan error, 1)
	go func() {
		_, err := txnsql.BeginDetached(ctx, "lib", func(c context.Context) (int, error) {
			cancel()
			<-c.Done()
			return 9, nil
		}, func(tx int) error { <-release; rolledBack <- tx; return nil })
		returned <- err
	}()
	select {
	case err := <-returned:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("BeginDetached waited for a rollback that was not answered")
	}
	select {
	case tx := <-rolledBack:
		t.Fatalf("rollback of %d finished before its connection answered", tx)
	default:
	}
	close(release)
	assert.Equal(t, 9, <-rolledBack)
}

// TestCommitAndRollbackWithin: an answer in time is returned (sql.ErrTxDone
// also as txn.ErrTxDone); past ctx, a COMMIT is reported as unanswered,
// which Classify calls a lost connection, and a ROLLBACK as the context's
// error.
func TestCommitAndRollbackWithin(t *testing.T) {
	errBoom := errors.New("boom")
	assert.NoError(t, txnsql.CommitWithin(context.Background(), "lib", func() error { return nil }))
	assert.ErrorIs(t, txnsql.CommitWithin(t.Context(), "lib", func() error { return errBoom }), errBoom)
	err := txnsql.RollbackWithin(t.Context(), "lib", func() error { return sql.ErrTxDone })
	assert.ErrorIs(t, err, txn.ErrTxDone)
	assert.ErrorIs(t, err, sql.ErrTxDone)

	release := make(chan struct{})
	defer close(release)
	silent := func() error { <-release; return nil }
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = txnsql.CommitWithin(ctx, "lib", silent)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, txn.ClassConnLost, txnsql.Classify(err), "%v", err)
	err = txnsql.RollbackWithin(ctx, "lib", silent)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, txn.ClassPermanent, txnsql.Classify(err), "%v", err)
}

// TestCommitOrRollbackWithin: with ctx already ended, no COMMIT is sent,
// the transaction is rolled back and the error is definite (not an unknown
// outcome) and wraps ctx's cause; a rollback that finds the transaction
// ended says so; with ctx live it commits.
func TestCommitOrRollbackWithin(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	commits, rollbacks := 0, 0
	commit := func() error { commits++; return nil }
	rollback := func() error { rollbacks++; return nil }
	require.NoError(t, txnsql.CommitOrRollbackWithin(ctx, "lib", commit, rollback))
	assert.Equal(t, 1, commits)
	cancel()
	err := txnsql.CommitOrRollbackWithin(ctx, "lib", commit, rollback)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, txn.ClassPermanent, txnsql.Classify(err), "a definite outcome: %v", err)
	assert.Equal(t, 1, commits, "no COMMIT after the context ended")
	assert.Equal(t, 1, rollbacks)
	err = txnsql.CommitOrRollbackWithin(ctx, "lib", commit, func() error { return sql.ErrTxDone })
	assert.ErrorIs(t, err, txn.ErrTxDone)
}
