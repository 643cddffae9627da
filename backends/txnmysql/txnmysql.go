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
	"database/sql"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsql"
)

// Runner is the Runner type this package builds.
type Runner = txn.Runner[*sql.Tx]

// sqlDriver is how txnsql sees this package.
func sqlDriver() txnsql.Driver {
	return txnsql.Driver{Name: "txnmysql", Classify: Classify, ClassifyConn: classifyConn}
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
