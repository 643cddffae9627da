package txnsql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// nopConnector is a database/sql driver whose transactions do nothing, so
// that the benchmarks measure database/sql and txnsql alone.
type nopConnector struct{}

func (nopConnector) Connect(context.Context) (driver.Conn, error) { return nopConn{}, nil }
func (nopConnector) Driver() driver.Driver                        { return nil }

type nopConn struct{}

func (nopConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("nop: no prepare") }
func (nopConn) Close() error                        { return nil }
func (nopConn) Begin() (driver.Tx, error)           { return nopTx{}, nil }

type nopTx struct{}

func (nopTx) Commit() error   { return nil }
func (nopTx) Rollback() error { return nil }

// benchmarkRun runs a Run that commits at once, with ctx.
func benchmarkRun(b *testing.B, ctx context.Context) {
	db := sql.OpenDB(nopConnector{})
	defer db.Close()
	r := txnsql.New(db, txn.NoAdaptive())
	fn := func(context.Context, *sql.Tx) error { return nil }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Run(ctx, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunBackground: a context that cannot end (no goroutine for the
// commit).
func BenchmarkRunBackground(b *testing.B) { benchmarkRun(b, context.Background()) }

// BenchmarkRunDeadline: a context with a deadline, whose COMMIT is bounded
// by it.
func BenchmarkRunDeadline(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	benchmarkRun(b, ctx)
}
