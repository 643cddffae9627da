package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/txnkit/txn"
)

// sqlStore is the Store of the database/sql backends (SQLite, MySQL), whose
// statements differ only in their DDL.
type sqlStore struct {
	db     *sql.DB
	prefix string
	// ddl creates the two tables; %[1]s is the prefix.
	ddl []string
	// newRunner builds the backend's Runner.
	newRunner func(db *sql.DB, opts ...runnerOption) *txn.Runner[*sql.Tx]
	// txOpts are the transaction options (isolation) of every transfer,
	// nil for the driver's defaults.
	txOpts *sql.TxOptions
	// begin are the begin options every Runner of the store gets: txOpts
	// as the backend's begin option.
	begin []txn.BeginOption[*sql.Tx]
	code  func(err error) string
	// batch is how many accounts one INSERT creates.
	batch int
}

func (s *sqlStore) q(format string) string { return fmt.Sprintf(format, s.prefix) }

// Setup implements Store.
func (s *sqlStore) Setup(ctx context.Context, accounts int) error {
	for _, stmt := range []string{`DROP TABLE IF EXISTS %[1]sledger`, `DROP TABLE IF EXISTS %[1]saccounts`} {
		if _, err := s.db.ExecContext(ctx, s.q(stmt)); err != nil {
			return fmt.Errorf("drop tables: %w", err)
		}
	}
	for _, stmt := range s.ddl {
		if _, err := s.db.ExecContext(ctx, s.q(stmt)); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	return insertAccounts(ctx, accounts, s.batch, func(ctx context.Context, ids []int64) error {
		args := make([]any, 0, 2*len(ids))
		for _, id := range ids {
			args = append(args, id, int64(initialBalance))
		}
		stmt := s.q(`INSERT INTO %[1]saccounts (id, balance) VALUES `) + strings.Repeat("(?, ?), ", len(ids)-1) + "(?, ?)"
		_, err := s.db.ExecContext(ctx, stmt, args...)
		return err
	})
}

// insertAccounts calls insert with the account ids 1..accounts in batches.
func insertAccounts(ctx context.Context, accounts, batch int, insert func(context.Context, []int64) error) error {
	ids := make([]int64, 0, batch)
	for id := int64(1); id <= int64(accounts); id++ {
		ids = append(ids, id)
		if len(ids) == batch || id == int64(accounts) {
			if err := insert(ctx, ids); err != nil {
				return fmt.Errorf("create accounts: %w", err)
			}
			ids = ids[:0]
		}
	}
	return nil
}

// statements returns the transfer's SELECT, UPDATE and INSERT.
func (s *sqlStore) statements() (sel, upd, ins string) {
	return s.q(`SELECT balance FROM %[1]saccounts WHERE id = ?`),
		s.q(`UPDATE %[1]saccounts SET balance = balance + ? WHERE id = ?`),
		s.q(`INSERT INTO %[1]sledger (from_id, to_id, amount) VALUES (?, ?, ?)`)
}

// Bank implements Store.
func (s *sqlStore) Bank(opts ...runnerOption) (TransferFunc, func() txn.AdmissionStats) {
	r := s.newRunner(s.db, opts...).WithBegin(s.begin...)
	sel, upd, ins := s.statements()
	return func(ctx context.Context, t transfer, callOpts ...callOption) error {
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			return sqlTransfer(ctx, stdStmts{tx}, t, sel, upd, ins)
		}, callOpts...)
	}, r.AdmissionStats
}

// Plain implements Store.
func (s *sqlStore) Plain() TransferFunc {
	sel, upd, ins := s.statements()
	return func(ctx context.Context, t transfer, _ ...callOption) error {
		tx, err := s.db.BeginTx(ctx, s.txOpts)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := sqlTransfer(ctx, stdStmts{tx}, t, sel, upd, ins); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return commitFailed(err, s.code(err) != "" && s.code(err) != "connection lost")
		}
		return nil
	}
}

// stdStmts runs a transfer's statements on a database/sql transaction.
type stdStmts struct{ tx *sql.Tx }

func (s stdStmts) queryInt(ctx context.Context, query string, arg int64) (v int64, err error) {
	err = s.tx.QueryRowContext(ctx, query, arg).Scan(&v)
	return v, err
}

func (s stdStmts) exec(ctx context.Context, query string, args ...any) error {
	_, err := s.tx.ExecContext(ctx, query, args...)
	return err
}

// Check implements Store.
func (s *sqlStore) Check(ctx context.Context) (totals, error) {
	return checkSQL(ctx, s.prefix, func(ctx context.Context, query string, dest ...any) error {
		return s.db.QueryRowContext(ctx, query).Scan(dest...)
	})
}

// checkSQL runs the check queries through query, a QueryRow-and-Scan.
func checkSQL(ctx context.Context, prefix string, query func(ctx context.Context, q string, dest ...any) error) (totals, error) {
	var t totals
	if err := query(ctx, fmt.Sprintf(sqlCheckSum, prefix), &t.sum, &t.accounts); err != nil {
		return t, fmt.Errorf("sum balances: %w", err)
	}
	if err := query(ctx, fmt.Sprintf(sqlCheckLedger, prefix), &t.ledgerRows); err != nil {
		return t, fmt.Errorf("count ledger rows: %w", err)
	}
	if err := query(ctx, fmt.Sprintf(sqlCheckReplay, prefix, int64(initialBalance)), &t.replayMismatches); err != nil {
		return t, fmt.Errorf("replay ledger: %w", err)
	}
	return t, nil
}

// Code implements Store.
func (s *sqlStore) Code(err error) string { return s.code(err) }

// Close implements Store.
func (s *sqlStore) Close() error { return s.db.Close() }
