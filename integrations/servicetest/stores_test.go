package servicetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txngrpc"
	"github.com/txnkit/txn/internal/faultproxy"
	"github.com/txnkit/txn/internal/testdb"
	"github.com/txnkit/txn/txnhttp"
)

// waitLimit bounds every wait of these tests, so that a bug fails instead
// of hanging. It is not a speed assertion.
const waitLimit = 30 * time.Second

// store is one database behind the middleware: a counter row (id 1) and an
// audit table, both reached from the handler through the repository helper
// of the database's driver.
type store struct {
	name string
	// counter is the counter table's name.
	counter string
	// mw builds the middleware over the store's Runner.
	mw func(opts ...txnhttp.Option) *txnhttp.Middleware
	// unary builds the gRPC interceptor over the store's Runner.
	unary func(opts ...txngrpc.Option) grpc.UnaryServerInterceptor
	// callOpts are added to every request.
	callOpts []txn.CallOption
	// read reads the counter in the transaction of ctx, taking whatever
	// lock makes a concurrent writer conflict.
	read func(ctx context.Context) (int64, error)
	// incr adds one to the counter in the transaction of ctx.
	incr func(ctx context.Context) error
	// audit inserts an audit row in the transaction of ctx.
	audit func(ctx context.Context) error
	// bad runs a statement that fails permanently.
	bad func(ctx context.Context) error
	// retries returns the errors that made the Runner retry so far, and
	// conflict tells whether one is the database's own conflict error.
	retries  *retryLog
	conflict func(err error) bool
	// state reads the counter and the number of audit rows outside any
	// transaction.
	state func() (counter, audits int64)
}

// retryLog records the errors that made a Runner retry.
type retryLog struct {
	txn.NopObserver
	mu   sync.Mutex
	errs []error
}

func (l *retryLog) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, e.Err)
}

// take returns the errors recorded since the last call.
func (l *retryLog) take() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.errs
	l.errs = nil
	return out
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("servicetest_%s_%08x", prefix, rand.Uint32())
}

// pgStore is PostgreSQL through pgx, REPEATABLE READ: two transactions
// that read the counter and then update it fail one of them with 40001.
func pgStore(t *testing.T) store {
	pool := pgPool(t, nil)
	return pgStoreOn(t, pool)
}

func pgPool(t *testing.T, edit func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	dsn := testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault)
	cfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err, "TXN_PG_DSN")
	cfg.MaxConns = 8
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if edit != nil {
		edit(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		testdb.Unreachable(t, "PostgreSQL (default "+testdb.PostgresDefault+")", testdb.PostgresEnv, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func pgStoreOn(t *testing.T, pool *pgxpool.Pool) store {
	t.Helper()
	ctr, aud := uniqueName("pg_counter"), uniqueName("pg_audit")
	exec := func(q string) {
		_, err := pool.Exec(context.Background(), q)
		require.NoError(t, err, q)
	}
	exec("CREATE TABLE " + ctr + " (id int PRIMARY KEY, v bigint NOT NULL)")
	exec("INSERT INTO " + ctr + " VALUES (1, 0)")
	exec("CREATE TABLE " + aud + " (n int NOT NULL)")
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+ctr+", "+aud)
	})
	log := &retryLog{}
	r := txnpgx.New(pool, txn.WithObserver(log)).WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.RepeatableRead}))
	return store{
		name:    "PostgreSQL",
		counter: ctr,
		retries: log,
		conflict: func(err error) bool {
			var pgErr *pgconn.PgError
			return errors.As(err, &pgErr) && pgErr.Code == "40001"
		},
		mw: func(opts ...txnhttp.Option) *txnhttp.Middleware { return txnhttp.New(r, opts...) },
		unary: func(opts ...txngrpc.Option) grpc.UnaryServerInterceptor {
			return txngrpc.UnaryServerInterceptor(r, opts...)
		},
		read: func(ctx context.Context) (v int64, err error) {
			tx, err := txnpgx.Tx(ctx)
			if err != nil {
				return 0, err
			}
			err = tx.QueryRow(ctx, "SELECT v FROM "+ctr+" WHERE id = 1").Scan(&v)
			return v, err
		},
		incr: func(ctx context.Context) error {
			tx, err := txnpgx.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "UPDATE "+ctr+" SET v = v + 1 WHERE id = 1")
			return err
		},
		audit: func(ctx context.Context) error {
			tx, err := txnpgx.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO "+aud+" VALUES (1)")
			return err
		},
		bad: func(ctx context.Context) error {
			tx, err := txnpgx.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, "INSERT INTO "+ctr+" VALUES (1, 0)") // duplicate key
			return err
		},
		state: func() (c, a int64) {
			ctx := context.Background()
			require.NoError(t, pool.QueryRow(ctx, "SELECT v FROM "+ctr+" WHERE id = 1").Scan(&c))
			require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+aud).Scan(&a))
			return c, a
		},
	}
}

// sqlStore is a database/sql store reached through txnsql.Tx; readSuffix
// is appended to the counter's SELECT (MariaDB: LOCK IN SHARE MODE, so that
// two readers that then both update deadlock).
func sqlStore(t *testing.T, name string, db *sql.DB, newRunner func(...txn.RunnerOption) *txnsql.Runner,
	conflict func(error) bool, readSuffix string, begin ...txn.BeginOption[*sql.Tx]) store {
	t.Helper()
	log := &retryLog{}
	r := newRunner(txn.WithObserver(log)).WithBegin(begin...)
	ctr, aud := uniqueName("counter"), uniqueName("audit")
	exec := func(q string) {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
	exec("CREATE TABLE " + ctr + " (id int PRIMARY KEY, v bigint NOT NULL)")
	exec("INSERT INTO " + ctr + " VALUES (1, 0)")
	exec("CREATE TABLE " + aud + " (n int NOT NULL)")
	t.Cleanup(func() {
		_, _ = db.Exec("DROP TABLE IF EXISTS " + ctr)
		_, _ = db.Exec("DROP TABLE IF EXISTS " + aud)
	})
	return store{
		name:     name,
		counter:  ctr,
		retries:  log,
		conflict: conflict,
		mw:       func(opts ...txnhttp.Option) *txnhttp.Middleware { return txnhttp.New(r, opts...) },
		unary: func(opts ...txngrpc.Option) grpc.UnaryServerInterceptor {
			return txngrpc.UnaryServerInterceptor(r, opts...)
		},
		read: func(ctx context.Context) (v int64, err error) {
			tx, err := txnsql.Tx(ctx)
			if err != nil {
				return 0, err
			}
			err = tx.QueryRowContext(ctx, "SELECT v FROM "+ctr+" WHERE id = 1"+readSuffix).Scan(&v)
			return v, err
		},
		incr: func(ctx context.Context) error {
			tx, err := txnsql.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "UPDATE "+ctr+" SET v = v + 1 WHERE id = 1")
			return err
		},
		audit: func(ctx context.Context) error {
			tx, err := txnsql.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO "+aud+" VALUES (1)")
			return err
		},
		bad: func(ctx context.Context) error {
			tx, err := txnsql.Tx(ctx)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO "+ctr+" VALUES (1, 0)") // duplicate key
			return err
		},
		state: func() (c, a int64) {
			require.NoError(t, db.QueryRow("SELECT v FROM "+ctr+" WHERE id = 1").Scan(&c))
			require.NoError(t, db.QueryRow("SELECT count(*) FROM "+aud).Scan(&a))
			return c, a
		},
	}
}

func mariaStore(t *testing.T) store {
	t.Helper()
	cfg, err := mysql.ParseDSN(testdb.DSN(testdb.MySQLEnv, testdb.MySQLDefault))
	require.NoError(t, err, "TXN_MYSQL_DSN")
	cfg.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		testdb.Unreachable(t, "MariaDB/MySQL at "+cfg.Addr, testdb.MySQLEnv, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	newRunner := func(opts ...txn.RunnerOption) *txnsql.Runner { return txnmysql.New(db, opts...) }
	deadlock := func(err error) bool {
		var me *mysql.MySQLError
		return errors.As(err, &me) && me.Number == 1213
	}
	return sqlStore(t, "MariaDB", db, newRunner, deadlock, " LOCK IN SHARE MODE")
}

func sqliteStore(t *testing.T) store {
	t.Helper()
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "servicetest.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	newRunner := func(opts ...txn.RunnerOption) *txnsql.Runner { return txnsqlite.New(db, opts...) }
	busy := func(err error) bool { return txnsqlite.Classify(err) == txn.ClassRetryable }
	// A DEFERRED BEGIN, so that two transactions can both read before they
	// write, and conflict.
	return sqlStore(t, "SQLite", db, newRunner, busy, "", txnsqlite.Deferred())
}

func allStores() []func(*testing.T) store {
	return []func(*testing.T) store{pgStore, mariaStore, sqliteStore}
}

// proxiedPGPool returns a pool whose connections go through a fault proxy.
func proxiedPGPool(t *testing.T) (*pgxpool.Pool, *faultproxy.Proxy) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testdb.DSN(testdb.PostgresEnv, testdb.PostgresDefault))
	require.NoError(t, err)
	p, err := faultproxy.Start(fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	host, port, err := splitHostPort(p.Addr())
	require.NoError(t, err)
	pool := pgPool(t, func(c *pgxpool.Config) {
		c.ConnConfig.Host, c.ConnConfig.Port = host, port
		c.ConnConfig.Fallbacks = nil
	})
	return pool, p
}

func splitHostPort(addr string) (string, uint16, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			n, err := strconv.ParseUint(addr[i+1:], 10, 16)
			return addr[:i], uint16(n), err
		}
	}
	return "", 0, fmt.Errorf("no port in %q", addr)
}
