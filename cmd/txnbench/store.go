package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/txnkit/txn"
)

// initialBalance is every account's balance after Setup: large enough that
// no account of a run runs dry.
const initialBalance = 1_000_000_000

// errInsufficientFunds is returned, marked permanent, by a transfer whose
// source account holds less than the amount.
var errInsufficientFunds = errors.New("insufficient funds")

// transfer moves amount from account from to account to (ids 1..accounts).
type transfer struct {
	from, to int64
	amount   int64
	// sorted makes the transaction touch the lower id first; otherwise it
	// touches from first, so that two opposite transfers lock their rows in
	// opposite orders.
	sorted bool
	// hot marks a transfer of the hot pair in a mixed workload.
	hot bool
}

// order returns the two accounts in the order the transaction touches them.
func (t transfer) order() (first, second int64) {
	if t.sorted && t.to < t.from {
		return t.to, t.from
	}
	return t.from, t.to
}

// delta returns how much account id's balance changes.
func (t transfer) delta(id int64) int64 {
	if id == t.from {
		return -t.amount
	}
	return t.amount
}

// Store is one backend's part of the workload: its Runner and its
// statements. The workload itself (workers, policies, measurement, the
// invariant) is shared by all backends.
type Store interface {
	// Setup drops and recreates the tables, with accounts accounts (ids 1 to
	// accounts) holding initialBalance each and an empty ledger.
	Setup(ctx context.Context, accounts int) error
	// Bank returns a function that runs transfers on a new Runner built with
	// opts (those of one policy, and the observer). Each transfer reads both
	// balances, updates both and inserts a ledger row, in one transaction;
	// callOpts are passed to that call's Run. stats reads the Runner's
	// AdmissionStats (--admission-trace).
	Bank(opts ...runnerOption) (transfer TransferFunc, stats func() txn.AdmissionStats)
	// Plain returns a function that runs the same transfer without txn: a
	// transaction hand-written on the driver (begin, the statements,
	// commit; roll back on error), run once, with the same transaction
	// options. A commit that fails without a database error (a lost
	// connection) is reported as txn.ErrCommitUnknown, since it may have
	// committed.
	Plain() TransferFunc
	// Check reads what the invariant is checked on.
	Check(ctx context.Context) (totals, error)
	// Code returns a short name of a database error (an SQLSTATE, an error
	// number, a result code) for the table of retry causes, or "".
	Code(err error) string
	// Close releases the store's connections. It does not drop the tables,
	// so that they can be inspected after a run.
	Close() error
}

// TransferFunc runs one transfer in a transaction, retried by a Runner.
type TransferFunc func(ctx context.Context, t transfer, callOpts ...callOption) error

// totals is what Check reads.
type totals struct {
	// sum is the sum of all balances.
	sum int64
	// accounts is the number of accounts.
	accounts int64
	// ledgerRows is the number of rows in the ledger.
	ledgerRows int64
	// replayMismatches counts accounts whose balance differs from
	// initialBalance plus what the ledger says came in minus what went out.
	replayMismatches int64
}

// openStore connects to the backend c names and returns its Store. The
// returned cleanup removes what openStore created outside the database
// (SQLite's temporary directory); call it after Close.
func openStore(ctx context.Context, c *config) (Store, func(), error) {
	switch c.backend {
	case backendSQLite:
		return openSQLite(ctx, c)
	case backendPostgres:
		s, err := openPostgres(ctx, c)
		return s, func() {}, err
	case backendMySQL:
		s, err := openMySQL(ctx, c)
		return s, func() {}, err
	case backendMongoDB:
		s, err := openMongo(ctx, c)
		return s, func() {}, err
	}
	return nil, nil, fmt.Errorf("unknown backend %q", c.backend)
}

// plainRollbackTimeout bounds the ROLLBACK of a hand-written transaction,
// which runs even when the transfer's context has ended.
const plainRollbackTimeout = 5 * time.Second

// commitFailed returns the error of a hand-written transaction whose
// COMMIT failed with err: definite when the database answered (the
// transaction did not commit), txn.ErrCommitUnknown otherwise.
func commitFailed(err error, definite bool) error {
	if definite {
		return fmt.Errorf("commit: %w", err)
	}
	return fmt.Errorf("commit: %w: %w", txn.ErrCommitUnknown, err)
}

// Check queries shared by the SQL stores; %[1]s is the table prefix.
const (
	sqlCheckSum    = `SELECT COALESCE(SUM(balance), 0), COUNT(*) FROM %[1]saccounts`
	sqlCheckLedger = `SELECT COUNT(*) FROM %[1]sledger`
	// sqlCheckReplay counts the accounts whose balance is not the initial
	// one plus the ledger's credits minus its debits.
	sqlCheckReplay = `SELECT COUNT(*) FROM %[1]saccounts a
		LEFT JOIN (SELECT to_id AS id, SUM(amount) AS s FROM %[1]sledger GROUP BY to_id) c ON c.id = a.id
		LEFT JOIN (SELECT from_id AS id, SUM(amount) AS s FROM %[1]sledger GROUP BY from_id) d ON d.id = a.id
		WHERE a.balance <> %[2]d + COALESCE(c.s, 0) - COALESCE(d.s, 0)`
)

// stmts is what a transfer needs of a SQL transaction, so that the pgx and
// database/sql stores share one transfer.
type stmts interface {
	queryInt(ctx context.Context, query string, arg int64) (int64, error)
	exec(ctx context.Context, query string, args ...any) error
}

// sqlTransfer is the transfer on SQL: read both balances in t's lock order,
// refuse it (permanently) when the source is short, update both, and add a
// ledger row. sel, upd and ins are the dialect's statements.
func sqlTransfer(ctx context.Context, tx stmts, t transfer, sel, upd, ins string) error {
	first, second := t.order()
	b1, err := tx.queryInt(ctx, sel, first)
	if err != nil {
		return fmt.Errorf("read balance %d: %w", first, err)
	}
	b2, err := tx.queryInt(ctx, sel, second)
	if err != nil {
		return fmt.Errorf("read balance %d: %w", second, err)
	}
	fromBalance := b2
	if first == t.from {
		fromBalance = b1
	}
	if fromBalance < t.amount {
		return txn.Permanent(errInsufficientFunds)
	}
	for _, id := range [2]int64{first, second} {
		if err := tx.exec(ctx, upd, t.delta(id), id); err != nil {
			return fmt.Errorf("update balance %d: %w", id, err)
		}
	}
	if err := tx.exec(ctx, ins, t.from, t.to, t.amount); err != nil {
		return fmt.Errorf("insert ledger row: %w", err)
	}
	return nil
}
