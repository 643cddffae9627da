package chaostest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/internal/testdb"
)

// pgConfig returns the pool configuration of the test server's DSN,
// skipping (or failing, under TXN_REQUIRE_DBS=1) when it cannot be reached.
func pgConfig(t *testing.T) *pgxpool.Config {
	t.Helper()
	dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		testdb.Unreachable(t, "PostgreSQL", testdb.PostgresEnv, err)
	}
	_ = c.Close(ctx)
	return cfg
}

// mysqlConfig is pgConfig for MariaDB.
func mysqlConfig(t *testing.T) *mysql.Config {
	t.Helper()
	cfg, err := mysql.ParseDSN(testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
	require.NoError(t, err)
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		testdb.Unreachable(t, "MariaDB", testdb.MySQLEnv, err)
	}
	return cfg
}

// pgAddr is the server address of cfg, host:port.
func pgAddr(cfg *pgxpool.Config) string {
	return net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
}

// pgBank creates the bank's tables (named after name) through direct and
// returns the bank whose Runner, built with opts, connects to addr.
func pgBank(t *testing.T, direct *pgxpool.Config, addr, name string, conns int, opts ...txn.RunnerOption) (*bank, *txnpgx.Runner) {
	t.Helper()
	ctx := context.Background()
	dpool, err := pgxpool.NewWithConfig(ctx, direct.Copy())
	require.NoError(t, err)
	t.Cleanup(dpool.Close)
	acct, ledger := "chaostest_"+name+"_acct", "chaostest_"+name+"_ledger"
	for _, q := range []string{
		"DROP TABLE IF EXISTS " + acct + ", " + ledger,
		"CREATE TABLE " + acct + " (id INT PRIMARY KEY, balance INT NOT NULL)",
		"CREATE TABLE " + ledger + " (seq BIGSERIAL PRIMARY KEY, tid BIGINT NOT NULL, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL)",
		fmt.Sprintf("INSERT INTO %s SELECT g, %d FROM generate_series(1, %d) g", acct, initial, accounts),
	} {
		_, err := dpool.Exec(ctx, q)
		require.NoError(t, err, q)
	}
	t.Cleanup(func() { _, _ = dpool.Exec(context.Background(), "DROP TABLE IF EXISTS "+acct+", "+ledger) })

	cfg := direct.Copy()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r := txnpgx.New(pool, opts...)
	require.NoError(t, r.Err())

	b := &bank{name: "PostgreSQL", limit: func() int { return r.AdmissionStats().Limit }}
	q := newBankQueries(acct, ledger, func(n int) string { return "$" + strconv.Itoa(n) })
	b.transfer = func(ctx context.Context, tid int64, from, to, amount int, refuse bool) error {
		return r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			return transfer(ctx, pgxStmts{tx}, q, tid, from, to, amount, refuse)
		}, b.callOptions(from, to)...)
	}
	b.readers(func(ctx context.Context, q string) (map[int64]int, error) {
		rows, err := dpool.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		return collectPairs(rows)
	}, "SELECT tid, count(*)::int FROM "+ledger+" GROUP BY tid", "SELECT id::bigint, balance FROM "+acct, movesQuery(acct, ledger, "BIGINT"))
	return b, r
}

// movesQuery returns, per account, what the ledger moved in minus out.
// cast is the SQL type to cast an integer to (BIGINT, SIGNED).
func movesQuery(acct, ledger, cast string) string {
	return "SELECT a.id, CAST(COALESCE((SELECT SUM(amount) FROM " + ledger + " WHERE dst = a.id), 0) - " +
		"COALESCE((SELECT SUM(amount) FROM " + ledger + " WHERE src = a.id), 0) AS " + cast + ") FROM " + acct + " a"
}

func toInt(m map[int64]int, err error) (map[int]int, error) {
	out := map[int]int{}
	for k, v := range m {
		out[int(k)] = v
	}
	return out, err
}

// bankQueries are the statements of a transfer, in one driver's
// placeholder style.
type bankQueries struct{ sel, debit, credit, insert string }

// newBankQueries writes the transfer's statements on acct and ledger with
// ph(n) as the n-th placeholder.
func newBankQueries(acct, ledger string, ph func(n int) string) bankQueries {
	return bankQueries{
		sel:    "SELECT balance FROM " + acct + " WHERE id = " + ph(1) + " FOR UPDATE",
		debit:  "UPDATE " + acct + " SET balance = balance - " + ph(1) + " WHERE id = " + ph(2),
		credit: "UPDATE " + acct + " SET balance = balance + " + ph(1) + " WHERE id = " + ph(2),
		insert: "INSERT INTO " + ledger + " (tid, src, dst, amount) VALUES (" + ph(1) + ", " + ph(2) + ", " + ph(3) + ", " + ph(4) + ")",
	}
}

// stmts is what a transfer needs of a transaction.
type stmts interface {
	queryInt(ctx context.Context, q string, args ...any) (int, error)
	exec(ctx context.Context, q string, args ...any) error
}

type pgxStmts struct{ tx pgx.Tx }

func (s pgxStmts) queryInt(ctx context.Context, q string, args ...any) (v int, err error) {
	err = s.tx.QueryRow(ctx, q, args...).Scan(&v)
	return v, err
}

func (s pgxStmts) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.tx.Exec(ctx, q, args...)
	return err
}

type sqlStmts struct{ tx *sql.Tx }

func (s sqlStmts) queryInt(ctx context.Context, q string, args ...any) (v int, err error) {
	err = s.tx.QueryRowContext(ctx, q, args...).Scan(&v)
	return v, err
}

func (s sqlStmts) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.tx.ExecContext(ctx, q, args...)
	return err
}

// transfer is one bank transfer in the transaction s: it locks both
// accounts in id order (the faults, not deadlocks, which PostgreSQL finds
// only after deadlock_timeout, are the subject here), moves amount, writes
// the ledger row tid, and with refuse returns errRefused at the end, so that
// fn's error rolls everything back.
func transfer(ctx context.Context, s stmts, q bankQueries, tid int64, from, to, amount int, refuse bool) error {
	balance := map[int]int{}
	for _, id := range []int{min(from, to), max(from, to)} {
		v, err := s.queryInt(ctx, q.sel, id)
		if err != nil {
			return err
		}
		balance[id] = v
	}
	if balance[from] < amount {
		return errInsufficient
	}
	if err := s.exec(ctx, q.debit, amount, from); err != nil {
		return err
	}
	if err := s.exec(ctx, q.credit, amount, to); err != nil {
		return err
	}
	if err := s.exec(ctx, q.insert, tid, from, to, amount); err != nil {
		return err
	}
	if refuse {
		return errRefused
	}
	return nil
}

// rowScanner is what collectPairs needs of pgx.Rows and *sql.Rows.
type rowScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// collectPairs reads rows of (key, value).
func collectPairs(rows rowScanner) (map[int64]int, error) {
	m := map[int64]int{}
	for rows.Next() {
		var k int64
		var v int
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, rows.Err()
}

// readers sets the bank's reads from pairs, which runs a query of (key,
// value) rows outside any transaction: ledgerQ counts the ledger rows per
// transfer id, balancesQ reads the balances, movesQ what the ledger moved
// per account.
func (b *bank) readers(pairs func(ctx context.Context, q string) (map[int64]int, error), ledgerQ, balancesQ, movesQ string) {
	b.ledger = func(ctx context.Context) (map[int64]int, error) { return pairs(ctx, ledgerQ) }
	b.balances = func(ctx context.Context) (map[int]int, error) { return toInt(pairs(ctx, balancesQ)) }
	b.moves = func(ctx context.Context) (map[int]int, error) { return toInt(pairs(ctx, movesQ)) }
}

// mysqlBank is pgBank for MariaDB.
func mysqlBank(t *testing.T, direct *mysql.Config, addr, name string, conns int, opts ...txn.RunnerOption) (*bank, *txnmysql.Runner) {
	t.Helper()
	ctx := context.Background()
	ddb, err := sql.Open("mysql", direct.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = ddb.Close() })
	acct, ledger := "chaostest_"+name+"_acct", "chaostest_"+name+"_ledger"
	qs := []string{
		"DROP TABLE IF EXISTS " + acct + ", " + ledger,
		"CREATE TABLE " + acct + " (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE " + ledger + " (seq BIGINT AUTO_INCREMENT PRIMARY KEY, tid BIGINT NOT NULL, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL) ENGINE=InnoDB",
	}
	for id := 1; id <= accounts; id++ {
		qs = append(qs, fmt.Sprintf("INSERT INTO %s VALUES (%d, %d)", acct, id, initial))
	}
	for _, q := range qs {
		_, err := ddb.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	t.Cleanup(func() { _, _ = ddb.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+acct+", "+ledger) })

	cfg := direct.Clone()
	cfg.Addr = addr
	cfg.Timeout = 2 * time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	db.SetMaxOpenConns(conns)
	t.Cleanup(func() { _ = db.Close() })
	r := txnmysql.New(db, opts...)
	require.NoError(t, r.Err())

	b := &bank{name: "MariaDB", limit: func() int { return r.AdmissionStats().Limit }}
	q := newBankQueries(acct, ledger, func(int) string { return "?" })
	b.transfer = func(ctx context.Context, tid int64, from, to, amount int, refuse bool) error {
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			return transfer(ctx, sqlStmts{tx}, q, tid, from, to, amount, refuse)
		}, b.callOptions(from, to)...)
	}
	b.readers(func(ctx context.Context, q string) (map[int64]int, error) {
		rows, err := ddb.QueryContext(ctx, q)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		return collectPairs(rows)
	}, "SELECT tid, COUNT(*) FROM "+ledger+" GROUP BY tid", "SELECT id, balance FROM "+acct, movesQuery(acct, ledger, "SIGNED"))
	return b, r
}

// pgDownConfig returns a Run of a default txnpgx Runner over a pool of
// conns connections to addr, without checking that a server is there.
func pgDownConfig(t *testing.T, addr string, conns int) func(ctx context.Context) error {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r := txnpgx.New(pool)
	return func(ctx context.Context) error {
		return r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "SELECT 1")
			return err
		})
	}
}

// mysqlDown is pgDownConfig for MariaDB.
func mysqlDown(t *testing.T, addr string, conns int) func(ctx context.Context) error {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName, cfg.Timeout = "root", "tcp", addr, "test", 2*time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	db.SetMaxOpenConns(conns)
	t.Cleanup(func() { _ = db.Close() })
	r := txnmysql.New(db)
	return func(ctx context.Context) error {
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "SELECT 1")
			return err
		})
	}
}
