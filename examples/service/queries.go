package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/txnkit/txn/backends/txnsql"
)

// This file is written the way sqlc generates a package for database/sql:
// a Queries type over the DBTX interface, one method per query. The
// service builds it per request on txnsql.Tx(ctx), the transaction that
// txnhttp started, or on txnsql.TxOr(ctx, db) for reads that may run
// outside one. Unlike generated code it adapts its SQL to the database
// (placeholders, table name), so that one file serves the three of them.

// Queries runs the service's statements on db.
type Queries struct {
	db    txnsql.DBTX
	table string
	// dollar: PostgreSQL numbers its placeholders ($1, $2, ...).
	dollar bool
}

// New returns the Queries over db (a *sql.Tx, or the *sql.DB) for table.
func New(db txnsql.DBTX, table string, dollar bool) *Queries {
	return &Queries{db: db, table: table, dollar: dollar}
}

// q adapts a statement written with ? placeholders and %s for the table.
func (q *Queries) q(stmt string) string {
	stmt = fmt.Sprintf(stmt, q.table)
	if !q.dollar {
		return stmt
	}
	var sb strings.Builder
	n := 0
	for _, c := range stmt {
		if c == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// GetBalance returns the balance of account id, or sql.ErrNoRows.
func (q *Queries) GetBalance(ctx context.Context, id int64) (int64, error) {
	var b int64
	err := q.db.QueryRowContext(ctx, q.q(`SELECT balance FROM %s WHERE id = ?`), id).Scan(&b)
	return b, err
}

// AddBalanceParams are the arguments of AddBalance.
type AddBalanceParams struct {
	ID     int64
	Amount int64
}

// AddBalance adds arg.Amount (which may be negative) to an account's
// balance and returns the number of rows changed.
func (q *Queries) AddBalance(ctx context.Context, arg AddBalanceParams) (int64, error) {
	res, err := q.db.ExecContext(ctx, q.q(`UPDATE %s SET balance = balance + ? WHERE id = ?`), arg.Amount, arg.ID)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Total returns the sum of all balances.
func (q *Queries) Total(ctx context.Context) (int64, error) {
	var t int64
	err := q.db.QueryRowContext(ctx, q.q(`SELECT COALESCE(SUM(balance), 0) FROM %s`)).Scan(&t)
	return t, err
}

// Setup drops and creates the table with accounts 1..n holding balance
// each.
func (q *Queries) Setup(ctx context.Context, n int, balance int64) error {
	if _, err := q.db.ExecContext(ctx, q.q(`DROP TABLE IF EXISTS %s`)); err != nil {
		return err
	}
	if _, err := q.db.ExecContext(ctx, q.q(`CREATE TABLE %s (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)`)); err != nil {
		return err
	}
	for id := 1; id <= n; id++ {
		if _, err := q.db.ExecContext(ctx, q.q(`INSERT INTO %s (id, balance) VALUES (?, ?)`), id, balance); err != nil {
			return err
		}
	}
	return nil
}

var _ txnsql.DBTX = (*sql.DB)(nil)
