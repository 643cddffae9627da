// Package txnmysql runs txn transactions on MySQL, MariaDB, TiDB, Galera
// and Group Replication through database/sql and the
// github.com/go-sql-driver/mysql driver.
//
// It is the txnsql backend with a classifier that knows the servers' error
// numbers: a deadlock (1213), a lock wait timeout (1205), a MariaDB snapshot
// isolation conflict (1020), Galera and Group Replication certification
// failures and TiDB write conflicts make Run roll the transaction back and
// run fn again; a connection that broke before COMMIT is retried on a fresh
// connection, one that broke while COMMIT was in flight makes Run return an
// error matching txn.ErrCommitUnknown. See Classify for the whole table.
//
// Run always rolls the whole transaction back before it retries. This
// matters on MySQL and MariaDB, where a lock wait timeout (1205) rolls back
// only the statement that waited, not the transaction, unless the server
// runs with innodb_rollback_on_timeout.
//
// Savepoints use SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT:
// txn.Savepoint and a Run nested in fn on the same Runner both work.
package txnmysql

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"time"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// Runner is the Runner type this package builds.
type Runner = txn.Runner[*sql.Tx]

// sqlDriver is how txnsql sees this package.
func sqlDriver() txnsql.Driver {
	return txnsql.Driver{Name: "txnmysql", Classify: Classify, ClassifyConn: classifyConn,
		LockKeys: lockKeys, UnlockKeys: unlockKeys}
}

// LockName returns the named lock (GET_LOCK) that a Runner built with
// txn.DatabaseKeys takes for key: "txn:" and the 16 hex digits of the
// key's 64-bit FNV-1a hash, well within the 64 characters the servers
// allow. SQL of your own that must serialize with those Runners can take
// the same lock.
func LockName(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return fmt.Sprintf("txn:%016x", h.Sum64())
}

// lockWaitForever is GET_LOCK's timeout, in seconds, when ctx has no
// deadline: a year (ctx's cancellation still ends the wait).
const lockWaitForever = 365 * 24 * 3600

// lockKeys takes one named lock per key, in ascending order of the lock
// names, on the attempt's reserved connection before BEGIN. Named locks
// belong to the session: unlockKeys releases them after the transaction
// ended.
func lockKeys(ctx context.Context, conn *sql.Conn, keys []string) error {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = LockName(k)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		if err := getLock(ctx, conn, name); err != nil {
			return err
		}
	}
	return nil
}

// getLock takes the named lock name, waiting for it as long as ctx lasts.
// The statement's text is built here, without parameters, so that it goes
// over the text protocol, where MariaDB honours SET STATEMENT: the
// session's max_statement_time (MariaDB) and max_execution_time (MySQL,
// through the optimizer hint; a comment to MariaDB) do not end the wait,
// which only ctx bounds, as it bounds a wait for a key in the process.
// name is LockName's, "txn:" and hex digits, and wait an integer: nothing
// else reaches the statement. GET_LOCK's own timeout (0) with ctx still
// alive (the server's clock ran ahead) waits again for the time left; a
// NULL (the wait was interrupted, by KILL QUERY) fails without claiming
// that ctx ended.
func getLock(ctx context.Context, conn *sql.Conn, name string) error {
	for {
		wait := lockWaitForever
		if dl, ok := ctx.Deadline(); ok {
			wait = max(0, int(math.Ceil(time.Until(dl).Seconds())))
		}
		q := fmt.Sprintf("/*M!100108 SET STATEMENT max_statement_time = 0 FOR */ SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK('%s', %d)", name, wait)
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, q).Scan(&got); err != nil {
			return err
		}
		if got.Valid && got.Int64 == 1 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !got.Valid {
			return fmt.Errorf("txnmysql: GET_LOCK(%q) was interrupted by the server", name)
		}
	}
}

// unlockKeys releases every named lock of the session.
func unlockKeys(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, "DO RELEASE_ALL_LOCKS()")
	return err
}

// New returns a Runner over db, a handle opened with the MySQL driver
// (sql.Open("mysql", dsn) or sql.OpenDB(mysql.NewConnector(cfg))), whose
// errors are classified by Classify. Options configure the Runner (limits,
// backoff, observer, ...); txn.WithClassifier replaces Classify, typically
// with Classifier(ClassifyOptions{...}) to opt into more retryable errors,
// or with a function of yours that handles some errors and defers to
// Classify for the rest. What such a classifier leaves permanent is still
// checked for a lost connection (mysql.ErrInvalidConn, driver.ErrBadConn,
// MariaDB's 1927), which Run retries before COMMIT and reports as an
// unknown outcome during COMMIT. The Runner is safe for concurrent use and
// meant to be shared.
//
// A nil db yields a Runner whose Run returns txn.ErrNilRunner; an invalid
// option yields one whose Run returns an error matching txn.ErrBadOption.
func New(db *sql.DB, opts ...txn.RunnerOption) *Runner {
	return txnsql.NewRunner(db, sqlDriver(), opts...)
}

// TxOptions returns a begin option that sets the isolation level and the
// read-only flag of the transactions; give it to Runner.WithBegin. The
// driver supports sql.LevelDefault, LevelReadUncommitted,
// LevelReadCommitted, LevelRepeatableRead and LevelSerializable; any other
// level makes BEGIN, and so Run, fail with the driver's error, which is not
// retried. ReadOnly starts the transaction with START TRANSACTION READ ONLY.
func TxOptions(o sql.TxOptions) txn.BeginOption[*sql.Tx] {
	return sqlDriver().TxOptions(o)
}
