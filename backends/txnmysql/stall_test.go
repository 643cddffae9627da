package txnmysql_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestBeginBoundedThroughSilentLink: the link goes silent as BEGIN (or,
// with txn.DatabaseKeys, GET_LOCK) leaves: Run returns within its deadline
// plus RollbackTimeout, fn never ran, and the next Run on the pool of one
// connection commits once the link speaks again.
func TestBeginBoundedThroughSilentLink(t *testing.T) {
	integrationtest.BeginBoundedThroughSilentLink(t, func(t *testing.T) (*faultproxy.Proxy, func(...txn.RunnerOption) *txnmysql.Runner) {
		db, p := proxied(t)
		db.SetMaxOpenConns(1)
		return p, func(opts ...txn.RunnerOption) *txnmysql.Runner { return txnmysql.New(db, opts...) }
	}, "START TRANSACTION", "GET_LOCK", func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "SELECT 1")
		return err
	})
}
