package txnent_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent/note"
	"github.com/txnkit/txn/internal/integrationtest"
	"github.com/txnkit/txn/internal/testdb"
)

// prefix starts the name of every table the shared scenarios create.
const prefix = "txnent"

// server is one database the tests run against, through ent's SQL driver
// over a database/sql driver.
type server struct {
	integrationtest.Dialect
	// driverName and entDialect open it; what and env name it when it
	// cannot be reached.
	driverName, entDialect, what, env string
	// dsn returns the server's DSN.
	dsn func(t testing.TB) string
	// classify is the classifier the Runner gets.
	classify txn.Classifier
}

var (
	pgServer = server{
		Dialect:    integrationtest.Postgres(),
		driverName: "pgx", entDialect: dialect.Postgres, what: "PostgreSQL", env: testdb.PostgresEnv,
		dsn:      func(testing.TB) string { return testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault) },
		classify: txnpgx.Classify,
	}
	mysqlServer = server{
		Dialect:    integrationtest.MariaDB(),
		driverName: "mysql", entDialect: dialect.MySQL, what: "MariaDB", env: testdb.MySQLEnv,
		dsn: func(t testing.TB) string {
			mc, err := mysql.ParseDSN(testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
			require.NoError(t, err)
			mc.Logger = &mysql.NopLogger{}
			return mc.FormatDSN()
		},
		classify: txnmysql.Classify,
	}
	// sqliteServer has DEFERRED transactions (no _txlock=immediate), so
	// that two of them can race.
	sqliteServer = server{
		Dialect:    integrationtest.SQLite(),
		driverName: "sqlite", entDialect: dialect.SQLite, what: "SQLite",
		dsn: func(t testing.TB) string {
			return filepath.Join(t.TempDir(), "txnent.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)"
		},
		classify: txnsqlite.Classify,
	}
	servers = []server{pgServer, mysqlServer, sqliteServer}
)

// forEach runs f as a subtest per server.
func forEach(t *testing.T, f func(t *testing.T, s server)) {
	for _, s := range servers {
		t.Run(s.Name, func(t *testing.T) { f(t, s) })
	}
}

// suiteDB opens s for the shared scenarios.
func (s server) suiteDB(t testing.TB) *entDB {
	return s.suiteDBAt(t, s.dsn(t))
}

// suiteDBAt opens s at dsn, or skips (fails with TXN_REQUIRE_DBS=1) when
// the server cannot be reached.
func (s server) suiteDBAt(t testing.TB, dsn string) *entDB {
	t.Helper()
	db, err := sql.Open(s.driverName, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		if s.env == "" {
			t.Fatalf("%s: %v", s.what, err)
		}
		testdb.Unreachable(t, s.what, s.env, err)
	}
	db.SetMaxOpenConns(24)
	drv := entsql.OpenDB(s.entDialect, db)
	return &entDB{s: s, db: db, drv: drv, client: ent.NewClient(ent.Driver(drv))}
}

// entDB is integrationtest.DB over ent's SQL driver: statements in a
// transaction go through the *txnent.Tx fn receives.
type entDB struct {
	s      server
	db     *sql.DB
	drv    *entsql.Driver
	client *ent.Client
}

var _ integrationtest.DB[*txnent.Tx] = (*entDB)(nil)

// runner returns a Runner over e with its server's classifier and opts.
func (e *entDB) runner(opts ...txn.RunnerOption) *txnent.Runner {
	if e.s.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(e.s.classify)}, opts...)
	}
	return txnent.New(e.drv, opts...)
}

// q rewrites ? placeholders as $n on PostgreSQL.
func (e *entDB) q(query string) string {
	if e.s.entDialect != dialect.Postgres {
		return query
	}
	return integrationtest.Rebind(query)
}

func (e *entDB) Dialect() integrationtest.Dialect { return e.s.Dialect }

func (e *entDB) Runner(opts ...txn.RunnerOption) *txn.Runner[*txnent.Tx] { return e.runner(opts...) }

func (e *entDB) TxOptions(o sql.TxOptions) txn.BeginOption[*txnent.Tx] { return txnent.TxOptions(o) }

func (e *entDB) Exec(ctx context.Context, q string, args ...any) error {
	_, err := e.db.ExecContext(ctx, e.q(q), args...)
	return err
}

func (e *entDB) Ints(ctx context.Context, q string, args ...any) ([]int, error) {
	return integrationtest.ScanAll[int](e.db.QueryContext(ctx, e.q(q), args...))
}

func (e *entDB) Strings(ctx context.Context, q string, args ...any) ([]string, error) {
	return integrationtest.ScanAll[string](e.db.QueryContext(ctx, e.q(q), args...))
}

func (e *entDB) TxExec(ctx context.Context, tx *txnent.Tx, q string, args ...any) error {
	return tx.Exec(ctx, e.q(q), args, nil)
}

// TxInt runs a one-value query in the transaction.
func (e *entDB) TxInt(ctx context.Context, tx *txnent.Tx, q string, args ...any) (int, error) {
	var rows entsql.Rows
	if err := tx.Query(ctx, e.q(q), args, &rows); err != nil {
		return 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, sql.ErrNoRows
	}
	var n int
	if err := rows.Scan(&n); err != nil {
		return 0, err
	}
	return n, rows.Close()
}

func (e *entDB) Begin(ctx context.Context) (*txnent.Tx, error) {
	tx, err := e.drv.Tx(ctx)
	if err != nil {
		return nil, err
	}
	return txnent.NewTx(tx, e.drv.Dialect()), nil
}

func (e *entDB) Commit(tx *txnent.Tx) error { return txnent.Unwrap(tx).Commit() }

func (e *entDB) Rollback(tx *txnent.Tx) { _ = txnent.Unwrap(tx).Rollback() }

func (e *entDB) ConnsInUse() int { return e.db.Stats().InUse }

// withSchema creates the generated client's tables (txnent_accounts,
// txnent_notes, txnent_transfers) afresh, with account 1 at balance 0, for
// the tests of ent's own machinery.
func (e *entDB) withSchema(t *testing.T) *entDB {
	t.Helper()
	ctx := context.Background()
	for _, table := range []string{"txnent_accounts", "txnent_notes", "txnent_transfers"} {
		_, err := e.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
		require.NoError(t, err)
	}
	require.NoError(t, e.client.Schema.Create(ctx))
	a, err := e.client.Account.Create().SetBalance(0).Save(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, a.ID)
	return e
}

// open opens s with the generated client's tables.
func open(t *testing.T, s server) *entDB { return s.suiteDB(t).withSchema(t) }

func balance(t *testing.T, e *entDB, id int) int64 {
	t.Helper()
	a, err := e.client.Account.Get(context.Background(), id)
	require.NoError(t, err)
	return a.Balance
}

func notes(t *testing.T, e *entDB) []string {
	t.Helper()
	all, err := e.client.Note.Query().Order(ent.Asc(note.FieldID)).All(context.Background())
	require.NoError(t, err)
	out := []string{}
	for _, n := range all {
		out = append(out, n.Text)
	}
	return out
}

func addNote(ctx context.Context, c *ent.Client, text string) error {
	return c.Note.Create().SetText(text).Exec(ctx)
}
