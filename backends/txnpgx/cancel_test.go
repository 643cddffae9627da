package txnpgx_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestCancelStorm runs integrationtest.CancelStorm over a pool of one
// connection, with and without txn.DatabaseKeys: Runs cancelled at every
// stage leave the connection outside any transaction (and, with keys,
// holding no advisory lock), never commit once the cancellation was seen
// before COMMIT, and lose or double nothing.
func TestCancelStorm(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys=%v", keyed), func(t *testing.T) {
			cfg := poolConfig(t)
			cfg.MaxConns = 1
			pool := newPool(t, cfg)
			db := &pgxDB{pool: pool}
			var ropts []txn.RunnerOption
			var copts []txn.CallOption
			if keyed {
				ropts, copts = append(ropts, txn.DatabaseKeys()), append(copts, txn.Keys("storm"))
			}
			idle := func(ctx context.Context) error {
				c, err := pool.Acquire(ctx)
				if err != nil {
					return err
				}
				defer c.Release()
				if st := c.Conn().PgConn().TxStatus(); st != 'I' {
					return fmt.Errorf("the pool's connection is in transaction status %q", st)
				}
				var locks int
				if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()").Scan(&locks); err != nil {
					return err
				}
				if locks != 0 {
					return fmt.Errorf("the pool's connection holds %d advisory locks", locks)
				}
				return nil
			}
			counts := integrationtest.CancelStorm(t, db, "txnpgx", db.Runner(ropts...), idle, copts...)
			t.Log(integrationtest.FormatCounts(counts))
		})
	}
}

// TestCancelJustBeforeCommit runs integrationtest.CancelJustBeforeCommit
// over a pool of one connection.
func TestCancelJustBeforeCommit(t *testing.T) {
	cfg := poolConfig(t)
	cfg.MaxConns = 1
	db := &pgxDB{pool: newPool(t, cfg)}
	integrationtest.CancelJustBeforeCommit(t, db, "txnpgx", db.Runner())
}
