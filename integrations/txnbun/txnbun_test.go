package txnbun_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/integrations/txnbun"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/uptrace/bun"
)

// TestConflictRetried: two Runs lose a real race on one counter (40001
// through pgx and through pgdriver, a 1213 deadlock on MariaDB,
// SQLITE_BUSY); see integrationtest.ConflictRetried.
func TestConflictRetried(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		integrationtest.ConflictRetried(t, s.suiteDB(t), prefix)
	})
}

// TestNestedRunRollsBackToSavepoint: savepoint statements issued through
// the bun.Tx; see integrationtest.NestedRollsBackToSavepoint.
func TestNestedRunRollsBackToSavepoint(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		integrationtest.NestedRollsBackToSavepoint(t, s.suiteDB(t), prefix)
	})
}

// TestNestedRunConflictRestartsWholeTransaction: a nested Run loses a real
// race and the whole transaction restarts, whether fn returns the nested
// error or swallows it; see integrationtest.NestedConflictRestarts.
func TestNestedRunConflictRestartsWholeTransaction(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		t.Run("propagated", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, s.suiteDB(t), prefix, false)
		})
		t.Run("swallowed", func(t *testing.T) {
			integrationtest.NestedConflictRestarts(t, s.suiteDB(t), prefix, true)
		})
	})
}

// TestPanicRollsBack: see integrationtest.PanicRollsBack.
func TestPanicRollsBack(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		integrationtest.PanicRollsBack(t, s.suiteDB(t), prefix)
	})
}

// TestBankWorkload: 16 goroutines, one Runner, invariants checked; see
// integrationtest.BankWorkload.
func TestBankWorkload(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		integrationtest.BankWorkload(t, s.suiteDB(t), prefix)
	})
}

// TestCommitBoundedThroughSilentLink: a COMMIT that the link never
// delivers ends with txn.ErrCommitUnknown at the caller's deadline; see
// integrationtest.CommitBoundedThroughSilentLink.
func TestCommitBoundedThroughSilentLink(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		dsn, p := integrationtest.ProxiedPostgresDSN(t)
		integrationtest.CommitBoundedThroughSilentLink(t, pgServer.suiteDBAt(t, dsn), p, prefix)
	})
	t.Run("mariadb", func(t *testing.T) {
		dsn, p := integrationtest.ProxiedMySQLDSN(t)
		integrationtest.CommitBoundedThroughSilentLink(t, mysqlServer.suiteDBAt(t, dsn), p, prefix)
	})
}

// TestContextEndsDuringFn: the caller's context ends while fn runs; Run
// returns the context's error, not txn.ErrFnFinishedTx; see
// integrationtest.ContextEndsDuringFn.
func TestContextEndsDuringFn(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		integrationtest.ContextEndsDuringFn(t, s.suiteDB(t), prefix)
	})
}

// TestOptionsAndNil covers the adapter's own input checks.
func TestOptionsAndNil(t *testing.T) {
	ctx := context.Background()
	fn := func(context.Context, bun.Tx) error { return nil }
	require.ErrorIs(t, txnbun.New(nil).Run(ctx, fn), txn.ErrNilRunner)
	forEach(t, func(t *testing.T, s server) {
		db := s.suiteDB(t).db
		require.NoError(t, txnbun.New(db).Run(ctx, fn))
		r := s.runner(db)
		require.ErrorIs(t, r.WithBegin(txn.NewBeginOption[bun.Tx]("other", 42)).Run(ctx, fn), txn.ErrBadOption)
		ro := sql.TxOptions{ReadOnly: true}
		require.NoError(t, r.WithBegin(txnbun.TxOptions(ro)).Run(ctx, fn))
		err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error { return tx.Commit() })
		require.ErrorIs(t, err, txn.ErrFnFinishedTx)
	})
}

// TestClassify covers the connection rule under every classifier.
func TestClassify(t *testing.T) {
	assert.Equal(t, txn.ClassPermanent, txnbun.Classify(nil))
	assert.Equal(t, txn.ClassPermanent, txnbun.Classify(errors.New("x")))
	assert.Equal(t, txn.ClassConnLost, txnbun.Classify(fmt.Errorf("w: %w", driver.ErrBadConn)))
}
