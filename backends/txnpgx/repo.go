package txnpgx

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/txnkit/txn"
)

// DBTX is what sqlc's generated code for pgx/v5 expects of its database
// handle: its DBTX interface holds Exec, Query and QueryRow, plus CopyFrom
// and SendBatch when copyfrom or batch queries are generated. pgx.Tx,
// *pgxpool.Pool and *pgx.Conn implement it. Pass the result of Tx or TxOr
// to a generated New.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ DBTX = (pgx.Tx)(nil)
	_ DBTX = (*pgx.Conn)(nil)
)

// Tx returns the transaction carried by ctx: the innermost one of a txnpgx
// Run, a savepoint's inside txn.Savepoint or a nested Run. Use it in
// repository code that must run in the caller's transaction. When ctx
// carries none it returns an error matching txn.ErrNoTransaction, never a
// fallback to the pool, so that a call path that forgot the transaction
// fails loudly.
func Tx(ctx context.Context) (pgx.Tx, error) {
	if ctx == nil {
		return nil, txn.ErrNilContext
	}
	tx, ok := txn.TxFrom[pgx.Tx](ctx)
	if !ok || tx == nil {
		if h, in := txn.AnyTx(ctx); in && h != nil {
			return nil, fmt.Errorf("%w of type pgx.Tx: ctx carries a %T transaction; use the handle fn received", txn.ErrNoTransaction, h)
		}
		return nil, fmt.Errorf("%w: txnpgx.Tx needs the context given to a Run's fn (or a request run by txnhttp or txngrpc)", txn.ErrNoTransaction)
	}
	return tx, nil
}

// TxOr returns the transaction carried by ctx, as Tx does, or db (a
// *pgxpool.Pool, a *pgx.Conn) when ctx carries none: for repository code
// that may run inside a transaction or on its own. Each statement run on db
// outside a transaction commits on its own.
//
// It panics when ctx carries a transaction whose handle is not a DBTX (a
// *sql.Tx of a database/sql Runner, an ORM's handle): statements on db
// would then run outside the caller's transaction and commit even when it
// rolls back.
func TxOr(ctx context.Context, db DBTX) DBTX {
	h, ok := txn.AnyTx(ctx)
	if !ok || h == nil {
		return db
	}
	if tx, ok := h.(DBTX); ok {
		return tx
	}
	panic(fmt.Sprintf("txnpgx.TxOr: ctx carries a transaction whose handle, %T, is not a txnpgx.DBTX; "+
		"statements on the pool would run outside it: pass the repository a DBTX of that transaction", h))
}
