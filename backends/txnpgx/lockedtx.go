package txnpgx

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lockedTx is a transaction that BeginLocked began on a connection holding
// session advisory locks. The Runner's commit (backend.Commit) sends COMMIT
// and the unlock in one query, so that the next process waiting for the
// keys is granted them as the transaction commits, without waiting for a
// round trip of its holder. fn sees the pgx.Tx it wraps; the transaction's
// own Commit and Rollback behave as pgx's.
//
// pgx's transaction marks itself closed only when its own Commit or
// Rollback ran, which the combined query bypasses. So that a handle fn kept
// past its Run cannot send statements on a connection that went back to
// the pool (and into another Run's transaction), the wrapper, and every
// savepoint begun through it, refuses every statement with pgx.ErrTxClosed
// once that query was sent, as pgx's own transaction does after COMMIT.
// LargeObjects is pgx's own, bound to the wrapped transaction.
type lockedTx struct {
	guardedTx
	conn *pgx.Conn
	// unlocked is set once the server confirmed that the unlock after
	// COMMIT ran.
	unlocked bool
}

// newLockedTx wraps tx, begun on conn.
func newLockedTx(tx pgx.Tx, conn *pgx.Conn) *lockedTx {
	return &lockedTx{guardedTx: guardedTx{Tx: tx, closed: new(atomic.Bool)}, conn: conn}
}

// commitAndUnlockSQL commits and then releases the session's advisory
// locks: the unlock runs only if COMMIT succeeded (a simple query stops at
// its first error), and after it, so no other transaction holds the keys
// before this one's writes are visible.
const commitAndUnlockSQL = "COMMIT; SELECT pg_advisory_unlock_all()"

// commitAndUnlock commits and releases the locks in one round trip, and
// returns what pgx's Commit would: nil once the server confirmed COMMIT,
// pgx.ErrTxCommitRollback when it rolled back, the error that stopped it
// otherwise. A transaction that is no longer open and healthy (fn ended it
// itself, or a statement failed, and COMMIT would answer ROLLBACK) is
// committed by pgx as usual, so that its answer is the one pgx gives.
func (t *lockedTx) commitAndUnlock(ctx context.Context) error {
	pc := t.conn.PgConn()
	if t.closed.Load() || pc.TxStatus() != 'T' {
		return t.Commit(ctx)
	}
	t.closed.Store(true)
	results, err := pc.Exec(ctx, commitAndUnlockSQL).ReadAll()
	if len(results) > 0 && results[0].Err == nil {
		// COMMIT answered; if the unlock after it failed, the Runner's
		// unlock tries again and closes the connection if that fails too.
		t.unlocked = err == nil && len(results) == 2
		if results[0].CommandTag.String() == "ROLLBACK" {
			return pgx.ErrTxCommitRollback
		}
		return nil
	}
	if len(results) > 0 {
		err = results[0].Err
	}
	if pc.TxStatus() != 'I' {
		// As pgx does after a failed COMMIT: the connection's state is
		// unknown.
		_ = t.conn.Close(ctx)
	}
	return err
}

// guardedTx is a pgx.Tx, the transaction or one of its savepoints, that
// fails every call with pgx.ErrTxClosed once closed is set, and passes it
// on to the savepoints it begins.
type guardedTx struct {
	pgx.Tx
	closed *atomic.Bool
}

// Begin begins a savepoint, guarded as its transaction is.
func (g guardedTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if g.closed.Load() {
		return nil, pgx.ErrTxClosed
	}
	sp, err := g.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return guardedTx{Tx: sp, closed: g.closed}, nil
}

// Commit commits as pgx.Tx's Commit does.
func (g guardedTx) Commit(ctx context.Context) error {
	if g.closed.Load() {
		return pgx.ErrTxClosed
	}
	return g.Tx.Commit(ctx)
}

// Rollback rolls back as pgx.Tx's Rollback does.
func (g guardedTx) Rollback(ctx context.Context) error {
	if g.closed.Load() {
		return pgx.ErrTxClosed
	}
	return g.Tx.Rollback(ctx)
}

// Exec runs sql as pgx.Tx's Exec does.
func (g guardedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if g.closed.Load() {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	return g.Tx.Exec(ctx, sql, args...)
}

// Query runs sql as pgx.Tx's Query does; once closed, the Rows it returns
// carry the error too.
func (g guardedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if g.closed.Load() {
		return closedRows{}, pgx.ErrTxClosed
	}
	return g.Tx.Query(ctx, sql, args...)
}

// QueryRow runs sql as pgx.Tx's QueryRow does.
func (g guardedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if g.closed.Load() {
		return closedRows{}
	}
	return g.Tx.QueryRow(ctx, sql, args...)
}

// Prepare prepares sql as pgx.Tx's Prepare does.
func (g guardedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if g.closed.Load() {
		return nil, pgx.ErrTxClosed
	}
	return g.Tx.Prepare(ctx, name, sql)
}

// CopyFrom copies as pgx.Tx's CopyFrom does.
func (g guardedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if g.closed.Load() {
		return 0, pgx.ErrTxClosed
	}
	return g.Tx.CopyFrom(ctx, table, columns, src)
}

// SendBatch sends b as pgx.Tx's SendBatch does.
func (g guardedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if g.closed.Load() {
		return closedBatch{}
	}
	return g.Tx.SendBatch(ctx, b)
}

// closedRows is the pgx.Rows and pgx.Row of a statement refused because
// its transaction is closed.
type closedRows struct{}

func (closedRows) Close()                                       {}
func (closedRows) Err() error                                   { return pgx.ErrTxClosed }
func (closedRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (closedRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (closedRows) Next() bool                                   { return false }
func (closedRows) Scan(...any) error                            { return pgx.ErrTxClosed }
func (closedRows) Values() ([]any, error)                       { return nil, pgx.ErrTxClosed }
func (closedRows) RawValues() [][]byte                          { return nil }
func (closedRows) Conn() *pgx.Conn                              { return nil }

// closedBatch is the pgx.BatchResults of a batch refused because its
// transaction is closed.
type closedBatch struct{}

func (closedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, pgx.ErrTxClosed }
func (closedBatch) Query() (pgx.Rows, error)         { return closedRows{}, pgx.ErrTxClosed }
func (closedBatch) QueryRow() pgx.Row                { return closedRows{} }
func (closedBatch) Close() error                     { return pgx.ErrTxClosed }
