package txnsqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
)

// The helper process: the test binary run again with these variables set
// runs TestHelperProcess only, which does what helperRole says on the
// database file helperPath.
const (
	helperRole = "TXNSQLITE_HELPER_ROLE"
	helperPath = "TXNSQLITE_HELPER_PATH"
	helperArg  = "TXNSQLITE_HELPER_ARG"
)

// TestHelperProcess is not a test: it is the second process of the
// multi-process tests, and does nothing unless started by one of them.
//
//   - "increment": opens the file with the DSN parameters in helperArg (a
//     mode, see modeDSN), prints "ready" and runs incrementTurns; at the
//     end it prints how many Runs committed and how many retries it saw.
//   - "hold": opens the file, takes the write lock (BEGIN IMMEDIATE), prints
//     "locked", and holds it until stdin closes or says anything.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRole)
	if role == "" {
		t.Skip("run by the multi-process tests only")
	}
	path := os.Getenv(helperPath)
	switch role {
	case "increment":
		db := openMode(t, path, os.Getenv(helperArg))
		fmt.Println("ready")
		rec := &recorder{}
		n, err := incrementTurns(db, rec)
		require.NoError(t, err)
		fmt.Printf("committed %d retried %d\n", n, len(rec.codes()))
	case "hold":
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(0)")
		require.NoError(t, err)
		defer db.Close()
		conn, err := db.Conn(context.Background())
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(context.Background(), "BEGIN IMMEDIATE")
		require.NoError(t, err)
		_, err = conn.ExecContext(context.Background(), "UPDATE counter SET n = n WHERE id = 1")
		require.NoError(t, err)
		fmt.Println("locked")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		_, err = conn.ExecContext(context.Background(), "ROLLBACK")
		require.NoError(t, err)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHelper runs the test binary again as a helper with role on path
// and waits for its first line, want.
func startHelper(t *testing.T, role, path, arg, want string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperRole+"="+role, helperPath+"="+path, helperArg+"="+arg)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := h.out.ReadString('\n')
	require.NoError(t, err, "the helper's first line")
	require.Equal(t, want, strings.TrimSpace(line))
	return h
}

// line returns the helper's next line of output that starts with prefix,
// skipping the test framework's.
func (h *helper) line(t *testing.T, prefix string) string {
	t.Helper()
	for {
		l, err := h.out.ReadString('\n')
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
		require.NoError(t, err, "the helper ended without printing %q", prefix)
	}
}

// modeDSN returns the DSN parameters of a journal mode and begin mode:
// "wal-immediate" (txnsqlite.DSN's), "wal-deferred" and "delete-deferred"
// (the rollback journal), both with a plain deferred BEGIN.
func modeDSN(mode string) string {
	journal, begin, _ := strings.Cut(mode, "-")
	if journal == "delete" {
		journal = "DELETE"
	}
	q := "_pragma=busy_timeout(5000)&_pragma=journal_mode(" + journal + ")"
	if begin == "immediate" {
		q += "&_txlock=immediate"
	}
	return q
}

// openMode opens path for mode (see modeDSN).
func openMode(t *testing.T, path, mode string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?"+modeDSN(mode))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.Ping())
	return db
}

// perProcess is how many perProcess each process commits.
const perProcess = 150

// incrementTurns commits perProcess read-then-write perProcess of the
// counter through a txnsqlite Runner over db observed by rec, each also
// inserting a ledger row with the process's id, and returns how many
// committed. A process that is more than ten ahead of the other pauses,
// so that the two interleave: SQLite's busy handler sleeps, and would let
// one process starve the other. In the deferred modes the read takes a
// snapshot that a write by the other process makes stale:
// SQLITE_BUSY_SNAPSHOT in WAL mode, SQLITE_BUSY in rollback-journal mode.
func incrementTurns(db *sql.DB, rec *recorder) (int, error) {
	r := txnsqlite.New(db, txn.MaxAttempts(0), txn.WithObserver(rec))
	pid := os.Getpid()
	n := 0
	for n < perProcess {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var v int
			if err := tx.QueryRowContext(ctx, "SELECT n FROM counter WHERE id = 1").Scan(&v); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE counter SET n = ? WHERE id = 1", v+1); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO ledger (pid) VALUES (?)", pid)
			return err
		})
		cancel()
		if err != nil {
			return n, fmt.Errorf("increment %d: %w", n+1, err)
		}
		n++
		for n < perProcess {
			var theirs int
			if err := db.QueryRow("SELECT COUNT(*) FROM ledger WHERE pid != ?", pid).Scan(&theirs); err != nil {
				return n, err
			}
			if n <= theirs+10 || theirs >= perProcess {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return n, nil
}

// TestTwoProcessesIncrement runs read-then-write perProcess of one row from
// this process and a second one, on the same file, in WAL mode with
// BEGIN IMMEDIATE and with a deferred BEGIN (SQLITE_BUSY_SNAPSHOT), and in
// rollback-journal mode with a deferred BEGIN (SQLITE_BUSY on the upgrade):
// every increment commits once, none is lost, and the retries happened.
func TestTwoProcessesIncrement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	for _, mode := range []string{"wal-immediate", "wal-deferred", "delete-deferred"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "shared.db")
			db := openMode(t, path, mode)
			for _, q := range []string{
				"CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
				"INSERT INTO counter VALUES (1, 0)",
				"CREATE TABLE ledger (seq INTEGER PRIMARY KEY, pid INTEGER NOT NULL)",
			} {
				_, err := db.Exec(q)
				require.NoError(t, err)
			}
			h := startHelper(t, "increment", path, mode, "ready")
			rec := &recorder{}
			mine, err := incrementTurns(db, rec)
			require.NoError(t, err)
			var theirs, theirRetries int
			_, err = fmt.Sscanf(h.line(t, "committed "), "%d retried %d", &theirs, &theirRetries)
			require.NoError(t, err)
			var n, rows, otherRows int
			require.NoError(t, db.QueryRow("SELECT n FROM counter WHERE id = 1").Scan(&n))
			require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM ledger").Scan(&rows))
			require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM ledger WHERE pid != ?", os.Getpid()).Scan(&otherRows))
			codes := map[int]int{}
			for _, c := range rec.codes() {
				codes[c]++
			}
			t.Logf("%s: this process committed %d, the other %d; counter %d, ledger %d rows; this process's retries by SQLite code: %v, the other's: %d",
				mode, mine, theirs, n, rows, codes, theirRetries)
			assert.Equal(t, mine+theirs, n, "no lost or doubled increment")
			assert.Equal(t, n, rows, "one ledger row per increment")
			assert.Equal(t, theirs, otherRows, "the other process's rows")
			assert.Equal(t, perProcess, mine)
			assert.Equal(t, perProcess, theirs)
			if !strings.HasSuffix(mode, "immediate") {
				assert.Positive(t, len(rec.codes())+theirRetries, "the stale deferred upgrades were retried")
			}
		})
	}
}

// TestBusyTimeoutBoundedByDeadline: another process holds the write lock
// and keeps it; Runs through a Runner over txnsqlite.Open (busy_timeout
// 5 s, BEGIN IMMEDIATE) with a 300 ms deadline return near the deadline,
// not after the busy timeout (SQLite's busy handler ignores the interrupt
// that ends the context), without running fn; once the other process lets
// go, the next Run commits, and only it.
func TestBusyTimeoutBoundedByDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	path := filepath.Join(t.TempDir(), "held.db")
	db, err := txnsqlite.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.Exec("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)")
	require.NoError(t, err)
	h := startHelper(t, "hold", path, "", "locked")
	r := txnsqlite.New(db)
	for i := 1; i <= 3; i++ {
		const deadline = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		ran := 0
		err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			ran++
			_, err := tx.ExecContext(ctx, "UPDATE counter SET n = n + 1 WHERE id = 1")
			return err
		})
		el := time.Since(start)
		cancel()
		t.Logf("Run %d returned after %v: %v", i, el.Round(time.Millisecond), err)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, el, deadline+time.Second, "Run %d: the busy handler's wait does not hold Run past its deadline", i)
		assert.Zero(t, ran, "BEGIN IMMEDIATE never got the lock")
	}
	_, err = io.WriteString(h.stdin, "release\n")
	require.NoError(t, err)
	// Once the other process lets go, the next Run commits.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE counter SET n = n + 1 WHERE id = 1")
		return err
	}))
	var n int
	require.NoError(t, db.QueryRow("SELECT n FROM counter WHERE id = 1").Scan(&n))
	assert.Equal(t, 1, n, "only the last Run committed")
}
