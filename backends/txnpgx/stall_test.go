package txnpgx_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestBeginBoundedThroughSilentLink: the link goes silent as BEGIN (or,
// with txn.DatabaseKeys, the advisory locks sent with it) leaves: Run
// returns within its deadline plus RollbackTimeout, fn never ran, and the
// next Run on the pool commits once the link speaks again.
func TestBeginBoundedThroughSilentLink(t *testing.T) {
	integrationtest.BeginBoundedThroughSilentLink(t, func(t *testing.T) (*faultproxy.Proxy, func(...txn.RunnerOption) *txnpgx.Runner) {
		dsn, p := integrationtest.ProxiedPostgresDSN(t)
		cfg, err := pgxpool.ParseConfig(dsn)
		require.NoError(t, err)
		cfg.MaxConns = 1
		pool := newPool(t, cfg)
		return p, func(opts ...txn.RunnerOption) *txnpgx.Runner { return txnpgx.New(pool, opts...) }
	}, "begin", "pg_advisory_lock", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT 1")
		return err
	})
}
