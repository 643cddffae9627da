package txnent_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent/note"
	"github.com/txnkit/txn/internal/testdb"
)

// server is one database the tests run against, with this package's tables
// (txnent_accounts, txnent_notes, txnent_transfers) created afresh: accounts 1 and 2 are
// counters, 3 to 202 are filler that makes a MariaDB transaction heavy.
type server struct {
	name     string
	drv      *entsql.Driver
	client   *ent.Client
	other    *sql.DB // a second pool: the other side of a conflict
	classify txn.Classifier
	// conflictOpts are the begin options under which a read followed by a
	// write of the same row conflicts with a concurrent writer:
	// REPEATABLE READ on PostgreSQL, a deferred BEGIN on SQLite.
	conflictOpts []txn.BeginOption[*txnent.Tx]
	// readForConflict is the read that makes two read-then-write
	// transactions conflict: a shared lock on MariaDB (both then wait for
	// each other's lock: a deadlock), a plain read elsewhere.
	readForConflict string
}

func (s *server) is(name string) bool { return s.name == name }

// q rewrites ? placeholders as $n on PostgreSQL.
func (s *server) q(query string) string {
	if !s.is("postgres") {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func open(t *testing.T, name string) *server {
	t.Helper()
	var (
		s          *server
		db         *sql.DB
		entDialect string
	)
	switch name {
	case "postgres":
		dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
		db = openSQL(t, "pgx", dsn, "PostgreSQL", testdb.PostgresEnv)
		entDialect = dialect.Postgres
		s = &server{
			classify: txnpgx.Classify, other: openSQL(t, "pgx", dsn, "PostgreSQL", testdb.PostgresEnv),
			conflictOpts:    []txn.BeginOption[*txnent.Tx]{txnent.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead})},
			readForConflict: "SELECT balance FROM txnent_accounts WHERE id = ?",
		}
	case "mariadb":
		dsn := testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault)
		db = openSQL(t, "mysql", dsn, "MariaDB", testdb.MySQLEnv)
		entDialect = dialect.MySQL
		s = &server{
			classify: txnmysql.Classify, other: openSQL(t, "mysql", dsn, "MariaDB", testdb.MySQLEnv),
			readForConflict: "SELECT balance FROM txnent_accounts WHERE id = ? LOCK IN SHARE MODE",
		}
	case "sqlite":
		path := filepath.Join(t.TempDir(), "txnent.db")
		db = openLite(t, path)
		entDialect = dialect.SQLite
		s = &server{
			classify: txnsqlite.Classify, other: openLite(t, path),
			conflictOpts:    []txn.BeginOption[*txnent.Tx]{txnent.TxOptions(sql.TxOptions{ReadOnly: true})}, // BEGIN DEFERRED: modernc reads ReadOnly only to choose it,
			readForConflict: "SELECT balance FROM txnent_accounts WHERE id = ?",
		}
	default:
		t.Fatalf("unknown server %q", name)
	}
	s.name = name
	s.drv = entsql.OpenDB(entDialect, db)
	s.client = ent.NewClient(ent.Driver(s.drv))
	ctx := context.Background()
	for _, table := range []string{"txnent_accounts", "txnent_notes", "txnent_transfers"} {
		_, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
		require.NoError(t, err)
	}
	require.NoError(t, s.client.Schema.Create(ctx))
	bulk := make([]*ent.AccountCreate, 202)
	for i := range bulk {
		bulk[i] = s.client.Account.Create().SetBalance(0)
	}
	created, err := s.client.Account.CreateBulk(bulk...).Save(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, created[0].ID)
	return s
}

func openSQL(t *testing.T, driverName, dsn, what, env string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driverName, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		testdb.Unreachable(t, what, env, err)
	}
	return db
}

func openLite(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := txnsqlite.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// forEach runs body as a subtest per server.
func forEach(t *testing.T, body func(t *testing.T, s *server)) {
	for _, name := range []string{"postgres", "mariadb", "sqlite"} {
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

// readInt runs a one-value query in the transaction.
func readInt(ctx context.Context, tx *txnent.Tx, query string, args ...any) (int64, error) {
	var rows entsql.Rows
	if err := tx.Query(ctx, query, args, &rows); err != nil {
		return 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, err
		}
		return 0, sql.ErrNoRows
	}
	var n int64
	if err := rows.Scan(&n); err != nil {
		return 0, err
	}
	return n, rows.Close()
}

func exec(ctx context.Context, tx *txnent.Tx, query string, args ...any) error {
	return tx.Exec(ctx, query, args, nil)
}

func balance(t *testing.T, s *server, id int) int64 {
	t.Helper()
	a, err := s.client.Account.Get(context.Background(), id)
	require.NoError(t, err)
	return a.Balance
}

func notes(t *testing.T, s *server) []string {
	t.Helper()
	all, err := s.client.Note.Query().Order(ent.Asc(note.FieldID)).All(context.Background())
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

// runner returns a Runner over s with s's classifier and opts.
func (s *server) runner(opts ...txn.RunnerOption) *txnent.Runner {
	if s.classify != nil {
		opts = append([]txn.RunnerOption{txn.WithClassifier(s.classify)}, opts...)
	}
	return txnent.New(s.drv, opts...)
}
