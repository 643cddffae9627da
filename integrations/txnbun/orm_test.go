package txnbun_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/uptrace/bun"
)

// TestRunInTxConflictRestartsRun: two Runs race on a counter inside bun's
// own tx.RunInTx (a bun savepoint) and fn returns what RunInTx returned.
// The loser's conflict, raised inside bun's savepoint and followed by
// bun's ROLLBACK TO SAVEPOINT, restarts the whole Run: the counter ends at
// 2 and only the committed attempts' log rows are kept.
func TestRunInTxConflictRestartsRun(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		b := s.suiteDB(t)
		d := b.Dialect()
		ctx := integrationtest.Context(t)
		counter := integrationtest.CreateTable(t, b, prefix, "id INT PRIMARY KEY, n INT NOT NULL")
		log := integrationtest.CreateTable(t, b, prefix, "name VARCHAR(64) PRIMARY KEY")
		require.NoError(t, b.Exec(ctx, "INSERT INTO "+counter+" VALUES (1, 0)"))
		rec := &integrationtest.Recorder{}
		r := b.Runner(txn.WithObserver(rec)).WithBegin(b.TxOptions(d.TxOptions))
		bar := integrationtest.NewBarrier(2)
		var calls [2]atomic.Int32
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[g] = r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
					attempt := calls[g].Add(1)
					if !d.SingleWriter {
						if err := b.TxExec(ctx, tx, "INSERT INTO "+log+" (name) VALUES (?)", fmt.Sprintf("g%d-a%d", g, attempt)); err != nil {
							return err
						}
					}
					return tx.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
						n, err := b.TxInt(ctx, tx, "SELECT n FROM "+counter+" WHERE id = 1"+d.ShareLock)
						if err != nil {
							return err
						}
						if attempt == 1 {
							if err := bar.Wait(ctx); err != nil {
								return txn.Permanent(err)
							}
						}
						return b.TxExec(ctx, tx, "UPDATE "+counter+" SET n = ? WHERE id = 1", n+1)
					})
				})
			}()
		}
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		integrationtest.CheckRacedPair(t, ctx, b, rec, counter, log, &calls)
	})
}

// The bun.Tx fn receives is what sqlc's generated New takes (database/sql).
var _ interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
} = bun.Tx{}
