package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
)

// pgStore is the Store of PostgreSQL (and servers speaking its protocol),
// through pgx and txnpgx.
type pgStore struct {
	pool   *pgxpool.Pool
	prefix string
	// txOpts are the transaction options (isolation) of every transfer.
	txOpts pgx.TxOptions
	// begin passes txOpts to every Runner of the store.
	begin []txn.BeginOption[pgx.Tx]
}

// openPostgres connects to the PostgreSQL server c.dsn names, with a pool
// of one connection per worker unless the DSN sets pool_max_conns.
func openPostgres(ctx context.Context, c *config) (Store, error) {
	cfg, err := pgxpool.ParseConfig(c.dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: --dsn: %w", err)
	}
	if !dsnSets(c.dsn, "pool_max_conns") {
		cfg.MaxConns = int32(c.connections())
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, pgConnectError(cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.User, err)
	}
	s := &pgStore{pool: pool, prefix: c.tablePrefix}
	if lvl, ok := pgIsolation(c.isolation); ok {
		s.txOpts = pgx.TxOptions{IsoLevel: lvl}
		s.begin = []txn.BeginOption[pgx.Tx]{txnpgx.TxOptions(s.txOpts)}
	}
	return s, nil
}

// pgConnectError tells a server that could not be reached from one that
// answered and refused the connection (authentication, role, database):
// only the second carries an error from the server.
func pgConnectError(host string, port uint16, user string, err error) error {
	var e *pgconn.PgError
	if errors.As(err, &e) {
		return fmt.Errorf("postgres: reached the server at %s:%d, but it refused the connection of role %q "+
			"(authentication, role or database; fix --dsn or TXN_PG_DSN): %w", host, port, user, err)
	}
	return fmt.Errorf("postgres: server unreachable at %s:%d (is it running? set --dsn or TXN_PG_DSN): %w", host, port, err)
}

// pgIsolation maps --isolation to pgx's level; false for the server's
// default.
func pgIsolation(name string) (pgx.TxIsoLevel, bool) {
	switch name {
	case "read-committed":
		return pgx.ReadCommitted, true
	case "repeatable-read":
		return pgx.RepeatableRead, true
	case "serializable":
		return pgx.Serializable, true
	}
	return "", false
}

func (s *pgStore) q(format string) string { return fmt.Sprintf(format, s.prefix) }

// Setup implements Store.
func (s *pgStore) Setup(ctx context.Context, accounts int) error {
	for _, stmt := range []string{
		`DROP TABLE IF EXISTS %[1]sledger`,
		`DROP TABLE IF EXISTS %[1]saccounts`,
		`CREATE TABLE %[1]saccounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)`,
		`CREATE TABLE %[1]sledger (id BIGSERIAL PRIMARY KEY, from_id BIGINT NOT NULL, to_id BIGINT NOT NULL, amount BIGINT NOT NULL)`,
	} {
		if _, err := s.pool.Exec(ctx, s.q(stmt)); err != nil {
			return fmt.Errorf("recreate tables: %w", err)
		}
	}
	return insertAccounts(ctx, accounts, 10000, func(ctx context.Context, ids []int64) error {
		_, err := s.pool.Exec(ctx, s.q(`INSERT INTO %[1]saccounts (id, balance) SELECT unnest($1::bigint[]), $2`), ids, int64(initialBalance))
		return err
	})
}

// statements returns the transfer's SELECT, UPDATE and INSERT.
func (s *pgStore) statements() (sel, upd, ins string) {
	return s.q(`SELECT balance FROM %[1]saccounts WHERE id = $1`),
		s.q(`UPDATE %[1]saccounts SET balance = balance + $1 WHERE id = $2`),
		s.q(`INSERT INTO %[1]sledger (from_id, to_id, amount) VALUES ($1, $2, $3)`)
}

// Bank implements Store.
func (s *pgStore) Bank(opts ...runnerOption) (TransferFunc, func() txn.AdmissionStats) {
	r := txnpgx.New(s.pool, opts...).WithBegin(s.begin...)
	sel, upd, ins := s.statements()
	return func(ctx context.Context, t transfer, callOpts ...callOption) error {
		return r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			return sqlTransfer(ctx, pgxStmts{tx}, t, sel, upd, ins)
		}, callOpts...)
	}, r.AdmissionStats
}

// Plain implements Store.
func (s *pgStore) Plain() TransferFunc {
	sel, upd, ins := s.statements()
	return func(ctx context.Context, t transfer, _ ...callOption) error {
		tx, err := s.pool.BeginTx(ctx, s.txOpts)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := sqlTransfer(ctx, pgxStmts{tx}, t, sel, upd, ins); err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), plainRollbackTimeout)
			_ = tx.Rollback(rctx)
			cancel()
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			var e *pgconn.PgError
			return commitFailed(err, errors.As(err, &e))
		}
		return nil
	}
}

// pgxStmts runs a transfer's statements on a pgx transaction.
type pgxStmts struct{ tx pgx.Tx }

func (p pgxStmts) queryInt(ctx context.Context, query string, arg int64) (v int64, err error) {
	err = p.tx.QueryRow(ctx, query, arg).Scan(&v)
	return v, err
}

func (p pgxStmts) exec(ctx context.Context, query string, args ...any) error {
	_, err := p.tx.Exec(ctx, query, args...)
	return err
}

// Check implements Store.
func (s *pgStore) Check(ctx context.Context) (totals, error) {
	return checkSQL(ctx, s.prefix, func(ctx context.Context, query string, dest ...any) error {
		return s.pool.QueryRow(ctx, query).Scan(dest...)
	})
}

// Code implements Store: the SQLSTATE, with a name for the usual ones.
func (s *pgStore) Code(err error) string {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return ""
	}
	switch e.Code {
	case "40001":
		return "40001 serialization_failure"
	case "40P01":
		return "40P01 deadlock_detected"
	case "55P03":
		return "55P03 lock_not_available"
	}
	return e.Code
}

// Close implements Store.
func (s *pgStore) Close() error {
	s.pool.Close()
	return nil
}

// dsnSets reports whether a PostgreSQL DSN, URL or key=value, sets key.
func dsnSets(dsn, key string) bool {
	sub := key + "="
	for i := strings.Index(dsn, sub); i >= 0; {
		if i == 0 || strings.ContainsRune("?& \t", rune(dsn[i-1])) {
			return true
		}
		j := strings.Index(dsn[i+1:], sub)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}
