package txnmysql_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/internal/faultproxy"
)

// killer kills, from its own connection, the connection whose id it
// receives, once ready (if set) says the moment has come. It reports the
// KILL's error on done.
func killer(ctx context.Context, admin *sql.DB, ids <-chan int64, ready func(ctx context.Context, id int64) error) (done <-chan error) {
	ch := make(chan error, 1)
	go func() {
		ch <- func() error {
			var id int64
			select {
			case id = <-ids:
			case <-ctx.Done():
				return ctx.Err()
			}
			if ready != nil {
				if err := ready(ctx, id); err != nil {
					return err
				}
			}
			_, err := admin.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
			return err
		}()
	}()
	return ch
}

// TestConnectionKilledDuringFn kills the connection of the first attempt
// with KILL from another connection, between two statements of fn and in
// the middle of one. The transaction dies with its connection; Run sees a
// lost connection before COMMIT, retries fn on a fresh connection, and
// only the second attempt's rows are committed.
func TestConnectionKilledDuringFn(t *testing.T) {
	for _, tc := range []struct {
		name string
		// betweenStatements kills while fn is between statements; otherwise
		// while fn's SELECT SLEEP runs.
		betweenStatements bool
	}{
		{"BetweenStatements", true},
		{"DuringStatement", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin := openDB(t, nil)
			db := openDB(t, nil)
			ctx := testCtx(t)
			tbl := createTable(t, admin, "attempt INT NOT NULL, step INT NOT NULL, conn BIGINT NOT NULL, PRIMARY KEY (attempt, step)")

			ids := make(chan int64, 1)
			var ready func(ctx context.Context, id int64) error
			if !tc.betweenStatements {
				// Wait until the victim is inside SELECT SLEEP.
				ready = func(ctx context.Context, id int64) error {
					return waitFor(ctx, 10*time.Millisecond, func() (bool, error) {
						var n int
						err := admin.QueryRowContext(ctx,
							"SELECT COUNT(*) FROM information_schema.processlist WHERE id = ? AND info LIKE 'SELECT SLEEP%'", id).Scan(&n)
						return n > 0, err
					})
				}
			}
			killed := killer(ctx, admin, ids, ready)

			rec := &retryRecorder{}
			r := txnmysql.New(db, txn.WithObserver(rec))
			var conns []int64
			var killErr, firstErr error
			err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
				attempt := len(conns) + 1
				id, err := connectionID(ctx, tx)
				if err != nil {
					return err
				}
				conns = append(conns, id)
				if _, err := tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (?, 1, ?)", attempt, id); err != nil {
					return err
				}
				if attempt == 1 {
					ids <- id
					if tc.betweenStatements {
						// Let the KILL land before the next statement.
						if killErr = <-killed; killErr != nil {
							return txn.Permanent(killErr)
						}
					} else {
						_, err := tx.ExecContext(ctx, "SELECT SLEEP(30)")
						killErr = <-killed
						firstErr = err
						if err == nil {
							return txn.Permanent(errors.New("SELECT SLEEP survived the KILL"))
						}
						return err
					}
				}
				_, err = tx.ExecContext(ctx, "INSERT INTO "+tbl+" VALUES (?, 2, ?)", attempt, id)
				if attempt == 1 {
					firstErr = err
				}
				return err
			})
			require.NoError(t, err)
			require.NoError(t, killErr)

			assert.True(t, errors.Is(firstErr, mysql.ErrInvalidConn) || txnmysql.Classify(firstErr) == txn.ClassConnLost,
				"the killed attempt saw a lost connection: %v", firstErr)
			require.Len(t, conns, 2, "fn ran twice")
			assert.NotEqual(t, conns[0], conns[1], "the retry ran on a fresh connection")
			ev := rec.events()
			require.Len(t, ev, 1)
			assert.Equal(t, txn.ClassRetryable, ev[0].Class, "a connection lost before COMMIT is retryable")
			assert.Equal(t, 0, count(t, admin, tbl, "attempt = 1"), "the killed transaction was rolled back")
			assert.Equal(t, 2, count(t, admin, tbl, "attempt = 2 AND conn = ?", conns[1]))
		})
	}
}

// proxied opens a pool whose connections go through a fault-injecting
// proxy in front of the test server.
func proxied(t *testing.T) (*sql.DB, *faultproxy.Proxy) {
	t.Helper()
	cfg := serverConfig(t)
	if cfg.Net != "tcp" {
		t.Skipf("%s uses %q, the proxy needs tcp", dsnEnv, cfg.Net)
	}
	openConfig(t, cfg.Clone()) // skip or fail now if the server is down
	p, err := faultproxy.Start(cfg.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	cfg.Addr = p.Addr()
	return openConfig(t, cfg), p
}

// fired waits for the proxy's armed fault to fire.
func fired(t *testing.T, p *faultproxy.Proxy) {
	t.Helper()
	select {
	case <-p.Fired():
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the armed fault did not fire")
	}
}

// TestConnectionLostDuringCommit cuts the connection while COMMIT is in
// flight, through a TCP proxy between the driver and the server. When the
// server's reply is lost, the commit really happened: Run returns an error
// matching txn.ErrCommitUnknown without running fn again, and the row is
// there once. When the COMMIT never reaches the server, nothing is
// committed, yet the client cannot know that: same error. With
// txn.Idempotent, Run runs fn again and the row is still there once.
func TestConnectionLostDuringCommit(t *testing.T) {
	admin := openDB(t, nil)

	for _, tc := range []struct {
		name       string
		mode       faultproxy.Mode
		idempotent bool
		wantRows   int
		wantCalls  int
	}{
		{"ReplyLost", faultproxy.CutAfterReply, false, 1, 1},
		{"RequestLost", faultproxy.CutBeforeForward, false, 0, 1},
		{"ReplyLostIdempotent", faultproxy.CutAfterReply, true, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, p := proxied(t)
			ctx := testCtx(t)
			tbl := createTable(t, admin, "id INT PRIMARY KEY, calls INT NOT NULL")

			var opts []txn.CallOption
			if tc.idempotent {
				opts = append(opts, txn.Idempotent())
			}
			rec := &retryRecorder{}
			r := txnmysql.New(db, txn.WithObserver(rec))
			calls := 0
			committed := 0
			err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
				calls++
				if err := txn.OnCommit(ctx, func() { committed++ }); err != nil {
					return err
				}
				// An upsert: running it twice has the effect of once.
				if _, err := tx.ExecContext(ctx,
					"INSERT INTO "+tbl+" VALUES (1, 1) ON DUPLICATE KEY UPDATE calls = calls + 1"); err != nil {
					return err
				}
				if calls == 1 {
					// The next client bytes with COMMIT in them are the
					// commit of this transaction.
					p.Arm([]byte("COMMIT"), tc.mode)
				}
				return nil
			}, opts...)
			fired(t, p)
			t.Logf("Run returned %v", err)
			assert.Equal(t, tc.wantCalls, calls)
			if tc.idempotent {
				require.NoError(t, err)
				assert.Equal(t, 1, committed)
				ev := rec.events()
				require.Len(t, ev, 1)
				assert.Equal(t, txn.ClassAmbiguous, ev[0].Class)
			} else {
				require.Error(t, err)
				assert.ErrorIs(t, err, txn.ErrCommitUnknown)
				assert.True(t, errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, driver.ErrBadConn),
					"the error wraps the driver's: %v", err)
				var gu *txn.GiveUpError
				require.ErrorAs(t, err, &gu)
				assert.True(t, gu.Ambiguous)
				assert.Equal(t, 1, gu.Attempts)
				assert.Equal(t, 0, committed, "no OnCommit callback after an unknown outcome")
				assert.Empty(t, rec.events(), "no retry")
			}
			assert.Equal(t, tc.wantRows, count(t, admin, tbl, "id = 1"))
			if tc.wantRows == 1 {
				// The idempotent re-run found the committed row and
				// counted itself in it: the first commit did happen.
				assert.Equal(t, 1, count(t, admin, tbl, "calls = ?", tc.wantCalls))
			}
			assert.Equal(t, 1, p.Fires())
		})
	}
}
