package txnmysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestCancelStorm runs integrationtest.CancelStorm over a pool of one
// connection, with and without txn.DatabaseKeys: Runs cancelled at every
// stage leave the connection outside any transaction (and, with keys,
// holding no named lock), never commit once the cancellation was seen
// before COMMIT, and lose or double nothing.
func TestCancelStorm(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys=%v", keyed), func(t *testing.T) {
			sqlDB := openDB(t, nil)
			sqlDB.SetMaxOpenConns(1)
			db := mariaDB(sqlDB)
			var ropts []txn.RunnerOption
			var copts []txn.CallOption
			if keyed {
				ropts, copts = append(ropts, txn.DatabaseKeys()), append(copts, txn.Keys("storm"))
			}
			idle := func(ctx context.Context) error {
				// A lock whose session was cut (a GET_LOCK cancelled by
				// its context closes the connection) is released once the
				// server has seen the connection close: wait for that. A
				// lock held by the pool's own connection is a leak.
				for {
					var inTx int
					var self int64
					var held sql.NullInt64
					if err := sqlDB.QueryRowContext(ctx, "SELECT @@in_transaction, CONNECTION_ID(), IS_USED_LOCK(?)",
						txnmysql.LockName("storm")).Scan(&inTx, &self, &held); err != nil {
						return err
					}
					if inTx != 0 {
						return fmt.Errorf("the pool's connection is in a transaction")
					}
					if !held.Valid {
						return nil
					}
					if held.Int64 == self {
						return fmt.Errorf("the pool's connection %d holds the key's named lock", self)
					}
					select {
					case <-ctx.Done():
						return fmt.Errorf("the key's named lock is still held by connection %d, which the Run left: %w", held.Int64, ctx.Err())
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
			counts := integrationtest.CancelStorm(t, db, "txnmysql", db.Runner(ropts...), idle, copts...)
			t.Log(integrationtest.FormatCounts(counts))
		})
	}
}

// TestCancelJustBeforeCommit runs integrationtest.CancelJustBeforeCommit
// over a pool of one connection.
func TestCancelJustBeforeCommit(t *testing.T) {
	sqlDB := openDB(t, nil)
	sqlDB.SetMaxOpenConns(1)
	db := mariaDB(sqlDB)
	integrationtest.CancelJustBeforeCommit(t, db, "txnmysql", db.Runner())
}
