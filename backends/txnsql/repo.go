package txnsql

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/txnkit/txn"
)

// DBTX is what sqlc's generated code for database/sql expects of its
// database handle (its DBTX interface): *sql.DB, *sql.Conn and *sql.Tx
// implement it. Pass the result of Tx or TxOr to a generated New.
type DBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ DBTX = (*sql.DB)(nil)
	_ DBTX = (*sql.Tx)(nil)
	_ DBTX = (*sql.Conn)(nil)
)

// Tx returns the transaction carried by ctx: the innermost one of a Run of
// a database/sql Runner (txnsql, txnmysql, txnsqlite), a savepoint's inside
// txn.Savepoint or a nested Run. Use it in repository code that must run in
// the caller's transaction. When ctx carries none it returns an error
// matching txn.ErrNoTransaction, never a fallback to the pool, so that a
// call path that forgot the transaction fails loudly.
func Tx(ctx context.Context) (*sql.Tx, error) {
	if ctx == nil {
		return nil, txn.ErrNilContext
	}
	tx, ok := txn.TxFrom[*sql.Tx](ctx)
	if !ok || tx == nil {
		if h, in := txn.AnyTx(ctx); in && h != nil {
			return nil, fmt.Errorf("%w of type *sql.Tx: ctx carries a %T transaction; use the handle fn received", txn.ErrNoTransaction, h)
		}
		return nil, fmt.Errorf("%w: txnsql.Tx needs the context given to a Run's fn (or a request run by txnhttp)", txn.ErrNoTransaction)
	}
	return tx, nil
}

// TxOr returns the transaction carried by ctx, as Tx does, or db when ctx
// carries none: for repository code that may run inside a transaction or on
// its own (reads on a request left out of the transaction, for instance).
// Each statement run on db outside a transaction commits on its own.
//
// Inside a Run whose handle is not a *sql.Tx but has DBTX's methods (an
// ORM adapter's *sqlx.Tx or bun.Tx), it returns that handle. It panics
// when ctx carries a transaction whose handle it cannot use (GORM's
// *gorm.DB, a pgx.Tx): statements on db would then run outside the
// caller's transaction and commit even when it rolls back. Give the
// repository that handle's own DBTX instead (GORM: tx.Statement.ConnPool).
func TxOr(ctx context.Context, db DBTX) DBTX {
	h, ok := txn.AnyTx(ctx)
	if !ok {
		return db
	}
	switch tx := h.(type) {
	case *sql.Tx:
		if tx == nil {
			return db
		}
		return tx
	case DBTX:
		return tx
	}
	panic(fmt.Sprintf("txnsql.TxOr: ctx carries a transaction whose handle, %T, is not a txnsql.DBTX; "+
		"statements on the pool would run outside it: pass the repository a DBTX of that transaction", h))
}
