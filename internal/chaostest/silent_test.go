package chaostest

import (
	"context"
	"database/sql"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
)

// silent is a listener that accepts connections and never says a word on
// them: a server whose kernel completes the TCP handshake while the
// process is stopped (SIGSTOP, a full accept queue served by nothing, a
// hung server). It counts and keeps the connections until hangUp.
type silent struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	accepts atomic.Int64
	wg      sync.WaitGroup
}

func newSilent(t *testing.T) *silent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &silent{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
		s.hangUp()
	})
	return s
}

// hangUp closes every connection accepted so far.
func (s *silent) hangUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

// TestSilentServer offers Runs with a short deadline to a default Runner
// whose server accepts connections and never answers, on PostgreSQL and
// MariaDB, with no connect timeout of the driver's own: each Run returns
// within its deadline plus a small bound, never runs fn, and says why.
func TestSilentServer(t *testing.T) {
	const runs, deadline, slack = 6, 300 * time.Millisecond, 700 * time.Millisecond
	for _, name := range []string{"PostgreSQL", "MariaDB"} {
		t.Run(name, func(t *testing.T) {
			s := newSilent(t)
			var run func(ctx context.Context, fn func()) error
			switch name {
			case "PostgreSQL":
				cfg, err := pgxpool.ParseConfig("postgres://postgres@" + s.ln.Addr().String() + "/postgres?sslmode=disable")
				require.NoError(t, err)
				cfg.MaxConns = 2
				pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
				require.NoError(t, err)
				t.Cleanup(pool.Close)
				r := txnpgx.New(pool)
				run = func(ctx context.Context, fn func()) error {
					return r.Run(ctx, func(context.Context, pgx.Tx) error { fn(); return nil })
				}
			default:
				cfg := mysql.NewConfig()
				cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", s.ln.Addr().String(), "test"
				db, err := sql.Open("mysql", cfg.FormatDSN())
				require.NoError(t, err)
				db.SetMaxOpenConns(2)
				t.Cleanup(func() { _ = db.Close() })
				r := txnmysql.New(db)
				run = func(ctx context.Context, fn func()) error {
					return r.Run(ctx, func(context.Context, *sql.Tx) error { fn(); return nil })
				}
			}
			ran := 0
			for i := 0; i < runs; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				err := run(ctx, func() { ran++ })
				el := time.Since(start)
				cancel()
				t.Logf("Run %d: %v after %v", i+1, err, el.Round(time.Millisecond))
				assert.Error(t, err)
				assert.Less(t, el, deadline+slack, "Run %d returns near its deadline", i+1)
			}
			assert.Zero(t, ran, "fn never ran")
			t.Logf("%d connections accepted", s.accepts.Load())
			s.hangUp()
		})
	}
}
