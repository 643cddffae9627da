package txngorm_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/integrations/txngorm"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/testdb"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// prefix starts the name of every table these tests create.
const prefix = "txngorm"

// dialect is one database the tests run against, through its GORM
// dialector.
type dialect struct {
	integrationtest.Dialect
	// open opens a GORM handle with cfg, or skips (fails with
	// TXN_REQUIRE_DBS=1) when the server cannot be reached.
	open func(t testing.TB, cfg *gorm.Config) *gorm.DB
	// classify is the classifier the Runner gets (nil: txngorm.Classify).
	classify txn.Classifier
}

var (
	pgDialect = dialect{Dialect: integrationtest.Postgres(), open: openPostgres, classify: txnpgx.Classify}
	// pgFallback is PostgreSQL classified by txngorm.Classify alone.
	pgFallback    = func() dialect { d := pgDialect; d.Name, d.classify = "postgres-fallback", nil; return d }()
	mysqlDialect  = dialect{Dialect: integrationtest.MariaDB(), open: openMySQL, classify: txnmysql.Classify}
	sqliteDialect = dialect{Dialect: integrationtest.SQLite(), open: openSQLite}
	dialects      = []dialect{pgDialect, mysqlDialect, sqliteDialect}
)

// forEach runs f as a subtest per dialect.
func forEach(t *testing.T, ds []dialect, f func(t *testing.T, d dialect)) {
	for _, d := range ds {
		t.Run(d.Name, func(t *testing.T) { f(t, d) })
	}
}

// gormConfig returns a quiet GORM configuration.
func gormConfig() *gorm.Config {
	return &gorm.Config{Logger: logger.Discard}
}

// ping checks that db reaches its server, or skips t naming env.
func ping(t testing.TB, db *gorm.DB, what, env string) {
	t.Helper()
	sqlDB, err := db.DB()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		testdb.Unreachable(t, what, env, err)
	}
	sqlDB.SetMaxOpenConns(24)
	t.Cleanup(func() { _ = sqlDB.Close() })
}

func openPostgres(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	return openPostgresAt(t, cfg, testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault))
}

// openPostgresAt opens PostgreSQL at dsn.
func openPostgresAt(t testing.TB, cfg *gorm.Config, dsn string) *gorm.DB {
	t.Helper()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// Deadlocks of the bank workload are detected after 100 ms instead of
	// the default second.
	db, err := gorm.Open(postgres.Open(dsn+sep+"deadlock_timeout=100ms"), cfg)
	if err != nil {
		testdb.Unreachable(t, "PostgreSQL", testdb.PostgresEnv, err)
	}
	ping(t, db, "PostgreSQL", testdb.PostgresEnv)
	return db
}

func openMySQL(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	return openMySQLAt(t, cfg, testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
}

// openMySQLAt opens MySQL/MariaDB at dsn.
func openMySQLAt(t testing.TB, cfg *gorm.Config, dsn string) *gorm.DB {
	t.Helper()
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	mc.Logger = &mysql.NopLogger{}
	db, err := gorm.Open(gormmysql.New(gormmysql.Config{DSNConfig: mc}), cfg)
	if err != nil {
		testdb.Unreachable(t, "MySQL/MariaDB", testdb.MySQLEnv, err)
	}
	ping(t, db, "MySQL/MariaDB", testdb.MySQLEnv)
	return db
}

func openSQLite(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "txngorm.db")
	db, err := gorm.Open(sqlite.Open(path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"), cfg)
	require.NoError(t, err)
	ping(t, db, "SQLite", "")
	return db
}

// suiteDB opens d with cfg for the shared scenarios.
func (d dialect) suiteDB(t testing.TB, cfg *gorm.Config) integrationtest.DB[*gorm.DB] {
	return &gormDB{d: d, db: d.open(t, cfg)}
}

// gormDB is integrationtest.DB over GORM: every statement goes through
// GORM's Exec and Raw.
type gormDB struct {
	d  dialect
	db *gorm.DB
}

func (g *gormDB) Dialect() integrationtest.Dialect { return g.d.Dialect }

func (g *gormDB) Runner(opts ...txn.RunnerOption) *txn.Runner[*gorm.DB] {
	if g.d.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(g.d.classify)}, opts...)
	}
	return txngorm.New(g.db, opts...)
}

func (g *gormDB) TxOptions(o sql.TxOptions) txn.BeginOption[*gorm.DB] {
	return txngorm.TxOptions(o)
}

func (g *gormDB) Exec(ctx context.Context, q string, args ...any) error {
	return g.db.WithContext(ctx).Exec(q, args...).Error
}

func (g *gormDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	return integrationtest.ScanAll[int](g.db.WithContext(ctx).Raw(q, args...).Rows())
}

func (g *gormDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return integrationtest.ScanAll[string](g.db.WithContext(ctx).Raw(q, args...).Rows())
}

// TxExec and TxInt use tx as fn received it: the handle must carry the
// transaction and the caller's context by itself.
func (g *gormDB) TxExec(_ context.Context, tx *gorm.DB, q string, args ...any) error {
	return tx.Exec(q, args...).Error
}

func (g *gormDB) TxInt(_ context.Context, tx *gorm.DB, q string, args ...any) (int, error) {
	var n int
	err := tx.Raw(q, args...).Scan(&n).Error
	return n, err
}

func (g *gormDB) Begin(ctx context.Context) (*gorm.DB, error) {
	tx := g.db.WithContext(ctx).Begin()
	return tx, tx.Error
}

func (g *gormDB) Commit(tx *gorm.DB) error { return tx.Commit().Error }

func (g *gormDB) Rollback(tx *gorm.DB) { tx.Rollback() }

func (g *gormDB) ConnsInUse() int {
	sqlDB, err := g.db.DB()
	if err != nil {
		return -1
	}
	return sqlDB.Stats().InUse
}
