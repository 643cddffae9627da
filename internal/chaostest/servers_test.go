package chaostest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/go-sql-driver/mysql"

	"github.com/txnkit/txn/internal/testdb"
)

// server is a private database server the test started: its own data
// directory in a temporary directory, a free port, stopped by PID.
type server struct {
	t    *testing.T
	name string
	dir  string
	port int
	// command returns the command that runs the server in the foreground.
	command func() *exec.Cmd
	// ready reports whether the server accepts connections.
	ready func(ctx context.Context) error
	cmd   *exec.Cmd
	done  chan error
	// stopSignal makes the server shut down fast and cleanly.
	stopSignal syscall.Signal
}

// missing fails or skips t because a server binary is not installed.
func missing(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv(testdb.RequireEnv) == "1" {
		t.Fatalf("%s is required because %s=1: %v", what, testdb.RequireEnv, err)
	}
	t.Skipf("%s not installed: %v", what, err)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// start runs the server and waits until it accepts connections.
func (s *server) start() {
	s.t.Helper()
	cmd := s.command()
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	require.NoError(s.t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(s.t, cmd.Start(), "start %s", s.name)
	_ = logf.Close()
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-s.done:
			s.cmd = nil
			log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			s.t.Fatalf("%s exited at start (%v): %s", s.name, werr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not accept connections within a minute: %v", s.name, err)
		}
	}
}

// stop shuts the server down by its PID and waits for it to exit.
func (s *server) stop() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(s.stopSignal)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// restart stops the server and starts it again on the same port; it
// returns when the server is down and when it accepts connections again.
func (s *server) restart() (down, up time.Time) {
	s.stop()
	down = time.Now()
	s.start()
	return down, time.Now()
}

// privateDir makes a temporary directory owned by u (nil: the current
// user), removed at the end of the test.
func privateDir(t *testing.T, prefix string, u *user.User) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	require.NoError(t, os.Chmod(dir, 0o700))
	return dir
}

// asUser makes cmd run as u when the test runs as root (PostgreSQL refuses
// to run as root).
func asUser(cmd *exec.Cmd, u *user.User) *exec.Cmd {
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	return cmd
}

// startPostgres initialises a PostgreSQL cluster in a temporary directory
// (initdb of /usr/lib/postgresql/15/bin, or TXN_PG_BIN) and starts it on a
// free port, with its Unix socket in that directory. It is stopped by PID
// at the end of the test. It returns the server and its pool configuration.
func startPostgres(t *testing.T) (*server, *pgxpool.Config) {
	t.Helper()
	bin := os.Getenv("TXN_PG_BIN")
	if bin == "" {
		bin = "/usr/lib/postgresql/15/bin"
	}
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			missing(t, "PostgreSQL's "+b+" (set TXN_PG_BIN)", err)
		}
	}
	var owner *user.User
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			missing(t, "the postgres user, to run PostgreSQL as root", err)
		}
		owner = u
	}
	dir := privateDir(t, "chaostest-pg-", owner)
	data := filepath.Join(dir, "data")
	initdb := asUser(exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"--no-sync", "-E", "UTF8", "--locale=C"), owner)
	initdb.Dir = dir
	out, err := initdb.CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)

	port := freePort(t)
	cfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	require.NoError(t, err)
	s := &server{t: t, name: "PostgreSQL", dir: dir, port: port, stopSignal: syscall.SIGINT}
	s.command = func() *exec.Cmd {
		cmd := asUser(exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
			"-c", "max_connections=60", "-c", "shared_buffers=16MB"), owner)
		cmd.Dir = dir
		return cmd
	}
	s.ready = func(ctx context.Context) error {
		c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}
	t.Cleanup(s.stop)
	s.start()
	return s, cfg
}

// startMariaDB is startPostgres for MariaDB: mariadb-install-db into a
// temporary directory, mariadbd on a free port (as root, --user=root, when
// the test runs as root), no grant tables.
func startMariaDB(t *testing.T) (*server, *mysql.Config) {
	t.Helper()
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		missing(t, "mariadb-install-db", err)
	}
	mariadbd, err := exec.LookPath("mariadbd")
	if err != nil {
		if mariadbd, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			missing(t, "mariadbd", err)
		}
	}
	dir := privateDir(t, "chaostest-maria-", nil)
	data := filepath.Join(dir, "data")
	u, err := user.Current()
	require.NoError(t, err)
	out, err := exec.Command(install, "--no-defaults", "--user="+u.Username, "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	require.NoError(t, err, "mariadb-install-db: %s", out)

	port := freePort(t)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", fmt.Sprintf("127.0.0.1:%d", port), "chaos"
	s := &server{t: t, name: "MariaDB", dir: dir, port: port, stopSignal: syscall.SIGTERM}
	s.command = func() *exec.Cmd {
		return exec.Command(mariadbd, "--no-defaults", "--user="+u.Username, "--datadir="+data,
			"--port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--socket="+filepath.Join(dir, "mysqld.sock"),
			"--pid-file="+filepath.Join(dir, "mysqld.pid"), "--skip-grant-tables", "--skip-log-bin",
			"--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=2", "--max-connections=60")
	}
	noDB := cfg.Clone()
	noDB.DBName = ""
	s.ready = func(ctx context.Context) error {
		db, err := sql.Open("mysql", noDB.FormatDSN())
		if err != nil {
			return err
		}
		defer db.Close()
		_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS chaos")
		return err
	}
	t.Cleanup(s.stop)
	s.start()
	return s, cfg
}
