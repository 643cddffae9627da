package txnbun_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnbun"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/testdb"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/pgdriver"
)

// prefix starts the name of every table these tests create.
const prefix = "txnbun"

// server is one database the tests run against, through a bun dialect.
type server struct {
	integrationtest.Dialect
	// open opens a handle on dsn, or skips (fails with TXN_REQUIRE_DBS=1)
	// when the server cannot be reached.
	open func(t testing.TB, dsn string) *bun.DB
	// dsn returns the server's DSN.
	dsn func(t testing.TB) string
	// classify is the classifier the Runner gets.
	classify txn.Classifier
}

// named returns d named name.
func named(d integrationtest.Dialect, name string) integrationtest.Dialect {
	d.Name = name
	return d
}

func pgDSN(testing.TB) string    { return testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault) }
func mysqlDSN(testing.TB) string { return testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault) }

// sqliteDSN is a fresh database file with DEFERRED transactions (no
// _txlock=immediate), so that two of them can race.
func sqliteDSN(t testing.TB) string {
	return filepath.Join(t.TempDir(), "txnbun.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
}

var (
	// pgServer is PostgreSQL through pgdialect over pgx's database/sql
	// driver.
	pgServer = server{Dialect: integrationtest.Postgres(), open: openPG, dsn: pgDSN, classify: txnpgx.Classify}
	// pgdriverServer is PostgreSQL through pgdialect over bun's own
	// pgdriver, classified as the README shows.
	pgdriverServer = server{Dialect: named(integrationtest.Postgres(), "pgdriver"), open: openPGDriver, dsn: pgDSN, classify: classifyPGDriver}
	mysqlServer    = server{Dialect: integrationtest.MariaDB(), open: openMy, dsn: mysqlDSN, classify: txnmysql.Classify}
	sqliteServer   = server{Dialect: integrationtest.SQLite(), open: openLite, dsn: sqliteDSN, classify: txnsqlite.Classify}
	servers        = []server{pgServer, pgdriverServer, mysqlServer, sqliteServer}
)

// forEach runs f as a subtest per server.
func forEach(t *testing.T, f func(t *testing.T, s server)) {
	for _, s := range servers {
		t.Run(s.Name, func(t *testing.T) { f(t, s) })
	}
}

func openPG(t testing.TB, dsn string) *bun.DB {
	t.Helper()
	sqldb, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, pgdialect.New()), "PostgreSQL", testdb.PostgresEnv)
}

func openPGDriver(t testing.TB, dsn string) *bun.DB {
	t.Helper()
	sqldb := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(dsn)))
	return ping(t, bun.NewDB(sqldb, pgdialect.New()), "PostgreSQL", testdb.PostgresEnv)
}

// classifyPGDriver is the classifier the README gives users of bun's
// pgdriver: its server errors are pgdriver.Error values, which
// txnpgx.Classify does not read, so it hands their SQLSTATE and message to
// txnpgx.Classify as a *pgconn.PgError.
func classifyPGDriver(err error) txn.Class {
	var pe pgdriver.Error
	if errors.As(err, &pe) {
		return txnpgx.Classify(&pgconn.PgError{Code: pe.Field('C'), Message: pe.Field('M')})
	}
	return txnpgx.Classify(err)
}

func openMy(t testing.TB, dsn string) *bun.DB {
	t.Helper()
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	mc.Logger = &mysql.NopLogger{}
	sqldb, err := sql.Open("mysql", mc.FormatDSN())
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, mysqldialect.New()), "MariaDB", testdb.MySQLEnv)
}

func openLite(t testing.TB, dsn string) *bun.DB {
	t.Helper()
	sqldb, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, sqlitedialect.New()), "SQLite", "")
}

// ping checks that db reaches its server, or skips t naming env.
func ping(t testing.TB, db *bun.DB, what, env string) *bun.DB {
	t.Helper()
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		if env == "" {
			t.Fatalf("%s: %v", what, err)
		}
		testdb.Unreachable(t, what, env, err)
	}
	db.SetMaxOpenConns(24)
	return db
}

// runner returns a Runner over db with s's classifier and opts.
func (s server) runner(db *bun.DB, opts ...txn.RunnerOption) *txnbun.Runner {
	if s.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(s.classify)}, opts...)
	}
	return txnbun.New(db, opts...)
}

// suiteDB opens s for the shared scenarios.
func (s server) suiteDB(t testing.TB) *bunDB {
	return s.suiteDBAt(t, s.dsn(t))
}

// suiteDBAt opens s at dsn for the shared scenarios.
func (s server) suiteDBAt(t testing.TB, dsn string) *bunDB {
	return &bunDB{s: s, db: s.open(t, dsn)}
}

// bunDB is integrationtest.DB over bun: bun formats the '?' placeholders
// itself, for every dialect.
type bunDB struct {
	s  server
	db *bun.DB
}

var _ integrationtest.DB[bun.Tx] = (*bunDB)(nil)

func (b *bunDB) Dialect() integrationtest.Dialect { return b.s.Dialect }

func (b *bunDB) Runner(opts ...txn.RunnerOption) *txn.Runner[bun.Tx] {
	return b.s.runner(b.db, opts...)
}

func (b *bunDB) TxOptions(o sql.TxOptions) txn.BeginOption[bun.Tx] { return txnbun.TxOptions(o) }

func (b *bunDB) Exec(ctx context.Context, q string, args ...any) error {
	_, err := b.db.NewRaw(q, args...).Exec(ctx)
	return err
}

func (b *bunDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	var out []int
	err := b.db.NewRaw(q, args...).Scan(ctx, &out)
	return out, err
}

func (b *bunDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	var out []string
	err := b.db.NewRaw(q, args...).Scan(ctx, &out)
	return out, err
}

func (b *bunDB) TxExec(ctx context.Context, tx bun.Tx, q string, args ...any) error {
	_, err := tx.NewRaw(q, args...).Exec(ctx)
	return err
}

func (b *bunDB) TxInt(ctx context.Context, tx bun.Tx, q string, args ...any) (int, error) {
	var n int
	err := tx.NewRaw(q, args...).Scan(ctx, &n)
	return n, err
}

func (b *bunDB) Begin(ctx context.Context) (bun.Tx, error) { return b.db.BeginTx(ctx, nil) }

func (b *bunDB) Commit(tx bun.Tx) error { return tx.Commit() }

func (b *bunDB) Rollback(tx bun.Tx) { _ = tx.Rollback() }

func (b *bunDB) ConnsInUse() int { return b.db.Stats().InUse }
