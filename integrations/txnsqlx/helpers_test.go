package txnsqlx_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnsqlx"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/testdb"
)

// prefix starts the name of every table these tests create.
const prefix = "txnsqlx"

// dialect is one database the tests run against, through its
// database/sql driver.
type dialect struct {
	integrationtest.Dialect
	// open opens a handle, or skips (fails with TXN_REQUIRE_DBS=1) when the
	// server cannot be reached.
	open func(t testing.TB) *sqlx.DB
	// classify is the classifier the Runner gets (nil: txnsqlx.Classify).
	classify txn.Classifier
}

var (
	pgDialect = dialect{Dialect: integrationtest.Postgres(), open: openPostgres, classify: txnpgx.Classify}
	// pgFallback is PostgreSQL classified by txnsqlx.Classify alone.
	pgFallback    = func() dialect { d := pgDialect; d.Name, d.classify = "postgres-fallback", nil; return d }()
	mysqlDialect  = dialect{Dialect: integrationtest.MariaDB(), open: openMySQL, classify: txnmysql.Classify}
	sqliteDialect = dialect{Dialect: integrationtest.SQLite(), open: openSQLite, classify: txnsqlite.Classify}
	dialects      = []dialect{pgDialect, mysqlDialect, sqliteDialect}
)

// forEach runs f as a subtest per dialect.
func forEach(t *testing.T, ds []dialect, f func(t *testing.T, d dialect)) {
	for _, d := range ds {
		t.Run(d.Name, func(t *testing.T) { f(t, d) })
	}
}

// connect opens driverName's dsn and checks that it reaches its server, or
// skips t naming env.
func connect(t testing.TB, driverName, dsn, what, env string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(driverName, dsn)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testdb.Unreachable(t, what, env, err)
	}
	db.SetMaxOpenConns(24)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func openPostgres(t testing.TB) *sqlx.DB {
	t.Helper()
	return openPostgresAt(t, testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault))
}

// openPostgresAt opens PostgreSQL at dsn.
func openPostgresAt(t testing.TB, dsn string) *sqlx.DB {
	t.Helper()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// Deadlocks of the bank workload are detected after 100 ms instead of
	// the default second.
	return connect(t, "pgx", dsn+sep+"deadlock_timeout=100ms", "PostgreSQL", testdb.PostgresEnv)
}

func openMySQL(t testing.TB) *sqlx.DB {
	t.Helper()
	return openMySQLAt(t, testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
}

// openMySQLAt opens MySQL/MariaDB at dsn.
func openMySQLAt(t testing.TB, dsn string) *sqlx.DB {
	t.Helper()
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	mc.Logger = &mysql.NopLogger{}
	return connect(t, "mysql", mc.FormatDSN(), "MySQL/MariaDB", testdb.MySQLEnv)
}

func openSQLite(t testing.TB) *sqlx.DB {
	t.Helper()
	// DEFERRED transactions (no _txlock=immediate), so that two of them
	// can race.
	path := filepath.Join(t.TempDir(), "txnsqlx.db")
	return connect(t, "sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", "SQLite", "")
}

// suiteDB opens d for the shared scenarios.
func (d dialect) suiteDB(t testing.TB) integrationtest.DB[*sqlx.Tx] {
	return &sqlxDB{d: d, db: d.open(t)}
}

// sqlxDB is integrationtest.DB over sqlx.
type sqlxDB struct {
	d  dialect
	db *sqlx.DB
}

func (s *sqlxDB) Dialect() integrationtest.Dialect { return s.d.Dialect }

func (s *sqlxDB) Runner(opts ...txn.RunnerOption) *txn.Runner[*sqlx.Tx] {
	if s.d.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(s.d.classify)}, opts...)
	}
	return txnsqlx.New(s.db, opts...)
}

func (s *sqlxDB) TxOptions(o sql.TxOptions) txn.BeginOption[*sqlx.Tx] {
	return txnsqlx.TxOptions(o)
}

func (s *sqlxDB) Exec(ctx context.Context, q string, args ...any) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(q), args...)
	return err
}

func (s *sqlxDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	var out []int
	err := s.db.SelectContext(ctx, &out, s.db.Rebind(q), args...)
	return out, err
}

func (s *sqlxDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	var out []string
	err := s.db.SelectContext(ctx, &out, s.db.Rebind(q), args...)
	return out, err
}

func (s *sqlxDB) TxExec(ctx context.Context, tx *sqlx.Tx, q string, args ...any) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(q), args...)
	return err
}

func (s *sqlxDB) TxInt(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (int, error) {
	var n int
	err := tx.GetContext(ctx, &n, tx.Rebind(q), args...)
	return n, err
}

func (s *sqlxDB) Begin(ctx context.Context) (*sqlx.Tx, error) { return s.db.BeginTxx(ctx, nil) }

func (s *sqlxDB) Commit(tx *sqlx.Tx) error { return tx.Commit() }

func (s *sqlxDB) Rollback(tx *sqlx.Tx) { _ = tx.Rollback() }

func (s *sqlxDB) ConnsInUse() int { return s.db.Stats().InUse }
