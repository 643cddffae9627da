package txnbun_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnbun"
	"github.com/txnkit/txn/internal/testdb"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/pgdriver"
)

// Tables of this package, prefixed so that other packages can use the same
// database at the same time.
type counter struct {
	bun.BaseModel `bun:"table:txnbun_counter"`
	ID            int64 `bun:"id,pk"`
	N             int64 `bun:"n,notnull"`
}

type logRow struct {
	bun.BaseModel `bun:"table:txnbun_log"`
	ID            int64  `bun:"id,pk,autoincrement"`
	Note          string `bun:"note,notnull"`
}

type account struct {
	bun.BaseModel `bun:"table:txnbun_accounts"`
	ID            int64 `bun:"id,pk"`
	Balance       int64 `bun:"balance,notnull"`
}

type ledger struct {
	bun.BaseModel `bun:"table:txnbun_ledger"`
	ID            int64 `bun:"id,pk,autoincrement"`
	Src           int64 `bun:"src,notnull"`
	Dst           int64 `bun:"dst,notnull"`
	Amount        int64 `bun:"amount,notnull"`
}

// filler rows make a MariaDB transaction heavy, so that InnoDB picks the
// other one as a deadlock victim.
type filler struct {
	bun.BaseModel `bun:"table:txnbun_filler"`
	ID            int64 `bun:"id,pk"`
	N             int64 `bun:"n,notnull"`
}

// server is one database the tests run against.
type server struct {
	name     string // the subtest's name
	kind     string // postgres, mariadb or sqlite
	db       *bun.DB
	other    *bun.DB // a second pool: the other side of a conflict
	classify txn.Classifier
	// conflictOpts are the begin options under which a read followed by a
	// write of the same row conflicts with a concurrent writer:
	// REPEATABLE READ on PostgreSQL, a deferred BEGIN on SQLite.
	conflictOpts []txn.BeginOption[bun.Tx]
	// readForConflict is the read that makes two read-then-write
	// transactions conflict: a shared lock on MariaDB (both then wait for
	// each other's lock: a deadlock), a plain read elsewhere.
	readForConflict string
}

func (s *server) is(kind string) bool { return s.kind == kind }

// open returns the server called name: PostgreSQL through pgdialect over
// pgx's database/sql driver ("postgres") or over bun's own pgdriver
// ("pgdriver"), MariaDB (mysqldialect) or SQLite (sqlitedialect over
// modernc.org/sqlite), with this package's tables created afresh.
func open(t *testing.T, name string) *server {
	t.Helper()
	var s *server
	switch name {
	case "postgres":
		dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
		s = &server{
			kind: "postgres", classify: txnpgx.Classify, db: openPG(t, dsn), other: openPG(t, dsn),
			conflictOpts:    []txn.BeginOption[bun.Tx]{txnbun.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead})},
			readForConflict: "SELECT n FROM txnbun_counter WHERE id = ?",
		}
	case "pgdriver":
		dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
		s = &server{
			kind: "postgres", classify: classifyPGDriver, db: openPGDriver(t, dsn), other: openPGDriver(t, dsn),
			conflictOpts:    []txn.BeginOption[bun.Tx]{txnbun.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead})},
			readForConflict: "SELECT n FROM txnbun_counter WHERE id = ?",
		}
	case "mariadb":
		dsn := testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault)
		s = &server{
			kind: "mariadb", classify: txnmysql.Classify, db: openMy(t, dsn), other: openMy(t, dsn),
			readForConflict: "SELECT n FROM txnbun_counter WHERE id = ? LOCK IN SHARE MODE",
		}
	case "sqlite":
		path := filepath.Join(t.TempDir(), "txnbun.db")
		s = &server{
			kind: "sqlite", classify: txnsqlite.Classify, db: openLite(t, path), other: openLite(t, path),
			conflictOpts:    []txn.BeginOption[bun.Tx]{txnbun.TxOptions(sql.TxOptions{ReadOnly: true})}, // BEGIN DEFERRED: modernc reads ReadOnly only to choose it,
			readForConflict: "SELECT n FROM txnbun_counter WHERE id = ?",
		}
	default:
		t.Fatalf("unknown server %q", name)
	}
	s.name = name
	resetTables(t, s.db)
	return s
}

func openPG(t *testing.T, dsn string) *bun.DB {
	t.Helper()
	sqldb, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, pgdialect.New()), "PostgreSQL", testdb.PostgresEnv)
}

func openPGDriver(t *testing.T, dsn string) *bun.DB {
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

func openMy(t *testing.T, dsn string) *bun.DB {
	t.Helper()
	sqldb, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, mysqldialect.New()), "MariaDB", testdb.MySQLEnv)
}

func openLite(t *testing.T, path string) *bun.DB {
	t.Helper()
	sqldb, err := txnsqlite.Open(path)
	require.NoError(t, err)
	return ping(t, bun.NewDB(sqldb, sqlitedialect.New()), "SQLite", "")
}

func ping(t *testing.T, db *bun.DB, what, env string) *bun.DB {
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
	return db
}

func resetTables(t *testing.T, db *bun.DB) {
	t.Helper()
	ctx := context.Background()
	for _, m := range []any{(*counter)(nil), (*logRow)(nil), (*account)(nil), (*ledger)(nil), (*filler)(nil)} {
		_, err := db.NewDropTable().Model(m).IfExists().Exec(ctx)
		require.NoError(t, err)
		_, err = db.NewCreateTable().Model(m).Exec(ctx)
		require.NoError(t, err)
	}
	_, err := db.NewInsert().Model(&[]counter{{ID: 1}, {ID: 2}}).Exec(ctx)
	require.NoError(t, err)
	fill := make([]filler, 200)
	for i := range fill {
		fill[i].ID = int64(i + 1)
	}
	_, err = db.NewInsert().Model(&fill).Exec(ctx)
	require.NoError(t, err)
}

// forEach runs body as a subtest per server.
func forEach(t *testing.T, body func(t *testing.T, s *server)) {
	for _, name := range []string{"postgres", "pgdriver", "mariadb", "sqlite"} {
		t.Run(name, func(t *testing.T) { body(t, open(t, name)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// barrier lets n goroutines wait for each other, giving up at ctx's end.
type barrier struct {
	mu   sync.Mutex
	n    int
	done chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, done: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	b.n--
	if b.n == 0 {
		close(b.done)
	}
	b.mu.Unlock()
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func counterN(t *testing.T, db *bun.DB, id int64) int64 {
	t.Helper()
	c := counter{ID: id}
	require.NoError(t, db.NewSelect().Model(&c).WherePK().Scan(context.Background()))
	return c.N
}

func notes(t *testing.T, db *bun.DB) []string {
	t.Helper()
	var rows []logRow
	require.NoError(t, db.NewSelect().Model(&rows).Order("id").Scan(context.Background()))
	out := []string{}
	for _, r := range rows {
		out = append(out, r.Note)
	}
	return out
}

func addNote(ctx context.Context, tx bun.Tx, note string) error {
	_, err := tx.NewInsert().Model(&logRow{Note: note}).Exec(ctx)
	return err
}

// runner returns a Runner over s with s's classifier and opts.
func (s *server) runner(opts ...txn.RunnerOption) *txnbun.Runner {
	if s.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(s.classify)}, opts...)
	}
	return txnbun.New(s.db, opts...)
}
