package txnpgx_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestTxntest runs txntest's forced failures on PostgreSQL: a failure
// forced before or at COMMIT rolls back on the server what fn, a nested
// Run and txn.Savepoint wrote, one forced after a real COMMIT surfaces as
// ErrCommitUnknown, and CheckRerun tells a buggy fn from a fixed one; see
// integrationtest.Txntest.
func TestTxntest(t *testing.T) {
	integrationtest.Txntest(t, &pgxDB{pool: newPool(t, nil)}, "txnpgx")
}

// pgxDB is integrationtest.DB over a pgxpool.Pool and txnpgx's Runner;
// '?' placeholders become $n.
type pgxDB struct{ pool *pgxpool.Pool }

var _ integrationtest.DB[pgx.Tx] = (*pgxDB)(nil)

func (p *pgxDB) Dialect() integrationtest.Dialect { return integrationtest.Postgres() }

func (p *pgxDB) Runner(opts ...txn.RunnerOption) *txn.Runner[pgx.Tx] {
	return txnpgx.New(p.pool, opts...)
}

func (p *pgxDB) TxOptions(o sql.TxOptions) txn.BeginOption[pgx.Tx] {
	var po pgx.TxOptions
	switch o.Isolation {
	case sql.LevelReadCommitted:
		po.IsoLevel = pgx.ReadCommitted
	case sql.LevelRepeatableRead:
		po.IsoLevel = pgx.RepeatableRead
	case sql.LevelSerializable:
		po.IsoLevel = pgx.Serializable
	}
	if o.ReadOnly {
		po.AccessMode = pgx.ReadOnly
	}
	return txnpgx.TxOptions(po)
}

func (p *pgxDB) Exec(ctx context.Context, q string, args ...any) error {
	_, err := p.pool.Exec(ctx, integrationtest.Rebind(q), args...)
	return err
}

func (p *pgxDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	rows, _ := p.pool.Query(ctx, integrationtest.Rebind(q), args...)
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

func (p *pgxDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, _ := p.pool.Query(ctx, integrationtest.Rebind(q), args...)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (p *pgxDB) TxExec(ctx context.Context, tx pgx.Tx, q string, args ...any) error {
	_, err := tx.Exec(ctx, integrationtest.Rebind(q), args...)
	return err
}

func (p *pgxDB) TxInt(ctx context.Context, tx pgx.Tx, q string, args ...any) (int, error) {
	var n int
	err := tx.QueryRow(ctx, integrationtest.Rebind(q), args...).Scan(&n)
	return n, err
}

func (p *pgxDB) Begin(ctx context.Context) (pgx.Tx, error) { return p.pool.Begin(ctx) }

func (p *pgxDB) Commit(tx pgx.Tx) error { return tx.Commit(context.Background()) }

func (p *pgxDB) Rollback(tx pgx.Tx) { _ = tx.Rollback(context.Background()) }

func (p *pgxDB) ConnsInUse() int { return int(p.pool.Stat().AcquiredConns()) }
