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

// TestScenarios runs the shared scenarios (see integrationtest.RunAll) on
// PostgreSQL through pgx and through pgdriver, MariaDB and SQLite:
// savepoint statements are issued through the bun.Tx.
func TestScenarios(t *testing.T) {
	var dbs []integrationtest.Opener[bun.Tx]
	for _, s := range servers {
		dbs = append(dbs, integrationtest.Opener[bun.Tx]{Name: s.Name, Open: func(t *testing.T) integrationtest.DB[bun.Tx] { return s.suiteDB(t) }})
	}
	integrationtest.RunAll(t, prefix, dbs)
}

// TestCommitBoundedThroughSilentLink: a COMMIT that the link never
// delivers ends with txn.ErrCommitUnknown at the caller's deadline; see
// integrationtest.CommitBoundedThroughSilentLink.
func TestCommitBoundedThroughSilentLink(t *testing.T) {
	integrationtest.CommitBoundedOnPostgresAndMariaDB(t, prefix,
		func(t *testing.T, dsn string) integrationtest.DB[bun.Tx] { return pgServer.suiteDBAt(t, dsn) },
		func(t *testing.T, dsn string) integrationtest.DB[bun.Tx] { return mysqlServer.suiteDBAt(t, dsn) })
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
