package txnmysql

import (
	"database/sql/driver"
	"errors"
	"net"
	"reflect"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// Server error numbers that Classify and Classifier recognise. Each comment
// quotes or summarises the vendor's documentation of the number. Sources:
//
//	InnoDB Error Handling  https://dev.mysql.com/doc/refman/en/innodb-error-handling.html
//	Locking Reads (NOWAIT) https://dev.mysql.com/doc/refman/en/innodb-locking-reads.html
//	MySQL error reference  https://dev.mysql.com/doc/mysql-errors/8.0/en/server-error-reference.html
//	MariaDB error 1020     https://mariadb.com/kb/en/e1020/
//	MariaDB KILL           https://mariadb.com/kb/en/kill/
//	TiDB error codes       https://docs.pingcap.com/tidb/stable/error-codes
const (
	// erLockDeadlock is ER_LOCK_DEADLOCK, SQLSTATE 40001, "Deadlock found
	// when trying to get lock; try restarting transaction". MySQL Reference
	// Manual, "InnoDB Error Handling": "A transaction deadlock causes InnoDB
	// to roll back the entire transaction. Retry the entire transaction when
	// this happens." Galera reports certification failures with the same
	// number ("Deadlock: wsrep aborted transaction"), often from COMMIT,
	// where it is a definite outcome: nothing was committed.
	erLockDeadlock = 1213

	// erLockWaitTimeout is ER_LOCK_WAIT_TIMEOUT, "Lock wait timeout
	// exceeded; try restarting transaction". MySQL Reference Manual,
	// "InnoDB Error Handling": "A lock wait timeout causes InnoDB to roll
	// back the current statement (the statement that was waiting for the
	// lock and encountered the timeout). To have the entire transaction roll
	// back, start the server with --innodb-rollback-on-timeout" (off by
	// default in MySQL and MariaDB). The transaction is still open; Run
	// rolls all of it back before it runs fn again. MariaDB also reports
	// SELECT ... NOWAIT and WAIT n with this number.
	erLockWaitTimeout = 1205

	// erLockNowait is MySQL 8.0's ER_LOCK_NOWAIT, "Statement aborted because
	// lock(s) could not be acquired immediately and NOWAIT is set". MySQL
	// Reference Manual, "Locking Read Concurrency with NOWAIT and SKIP
	// LOCKED": a locking read with NOWAIT "never waits to acquire a row
	// lock. The query executes immediately, failing with an error if a
	// requested row is locked." The caller asked not to wait, so retrying is
	// opt-in (ClassifyOptions.LockWaitNowait).
	erLockNowait = 3572

	// erCheckRead is ER_CHECKREAD, "Record has changed since last read in
	// table '%s'". MariaDB raises it under REPEATABLE READ when
	// innodb_snapshot_isolation is ON (the default from 11.6.2) and a row
	// read by the transaction was changed by a transaction that committed
	// since; InnoDB treats it like a deadlock and rolls the transaction
	// back (https://jira.mariadb.org/browse/MDEV-35235).
	erCheckRead = 1020

	// haErrLockDeadlock is the storage-engine handler error
	// HA_ERR_LOCK_DEADLOCK (include/my_base.h). DESIGN.md lists it among
	// the numbers Galera certification failures reach clients with.
	haErrLockDeadlock = 149

	// erUnknownComError is ER_UNKNOWN_COM_ERROR. A Galera node that is not
	// synced with the primary component answers statements with this
	// number and the message "WSREP has not yet prepared node for
	// application use" (reported by its users, e.g.
	// https://github.com/sysown/proxysql/issues/462); only that message is
	// retried, since the number otherwise means an unknown protocol
	// command.
	erUnknownComError = 1047

	// erTransactionRollbackDuringCommit is
	// ER_TRANSACTION_ROLLBACK_DURING_COMMIT, "Plugin instructed the server
	// to rollback the current transaction." MySQL Server Error Message
	// Reference: "When using Group Replication, this means that a
	// transaction failed the group certification process, due to one or
	// more members detecting a potential conflict, and was thus rolled
	// back."
	erTransactionRollbackDuringCommit = 3101

	// tidbWriteConflict is TiDB's 9007, "Write conflict". TiDB "Error Codes
	// and Troubleshooting": "You can retry the transaction from the
	// application".
	tidbWriteConflict = 9007

	// tidbForUpdateCantRetry is TiDB's 8002: "To guarantee consistency, a
	// transaction with the SELECT FOR UPDATE statement cannot be retried
	// when it encounters a commit conflict. TiDB rolls back the transaction
	// and returns this error. The application can safely retry the whole
	// transaction."
	tidbForUpdateCantRetry = 8002

	// tidbTxnRetryable is TiDB's 8022: "The transaction commit fails and has
	// been rolled back. The application can safely retry the whole
	// transaction."
	tidbTxnRetryable = 8022

	// tidbInfoSchemaChanged is TiDB's 8028: a table the transaction used
	// changed schema during the transaction, "the transaction commit fails
	// with this error. At this time, the application can safely retry the
	// whole transaction."
	tidbInfoSchemaChanged = 8028

	// erConnectionKilled is MariaDB's ER_CONNECTION_KILLED, SQLSTATE 70100,
	// "Connection was killed", sent by KILL [CONNECTION]. MariaDB's KILL
	// documentation: "If a connection is terminated that has an active
	// transaction, the transaction is rolled back." Like any lost
	// connection it is retried before COMMIT and ambiguous during COMMIT.
	erConnectionKilled = 1927

	// erConCountError is ER_CON_COUNT_ERROR, "Too many connections",
	// sent in place of the handshake when max_connections is reached.
	// Nothing of the transaction can have run; it is retried like a lost
	// connection.
	erConCountError = 1040

	// erServerShutdown is ER_SERVER_SHUTDOWN, "Server shutdown in
	// progress", sent to the statements and connection attempts of a
	// server that is stopping (a restart). The server rolls back open
	// transactions as it shuts down; like a lost connection it is retried
	// before COMMIT and ambiguous during COMMIT.
	erServerShutdown = 1053

	// erClientInteractionTimeout is MySQL 8.0's
	// ER_CLIENT_INTERACTION_TIMEOUT, "The client was disconnected by the
	// server because of inactivity" (wait_timeout): the connection is gone
	// and its transaction rolled back.
	erClientInteractionTimeout = 4031

	// erQueryTimeout is MySQL's ER_QUERY_TIMEOUT, "Query execution was
	// interrupted, maximum statement execution time exceeded"
	// (max_execution_time). Opt-in (ClassifyOptions.StatementTimeout).
	erQueryTimeout = 3024

	// erStatementTimeout is MariaDB's ER_STATEMENT_TIMEOUT, "Query execution
	// was interrupted (max_statement_time exceeded)". Opt-in
	// (ClassifyOptions.StatementTimeout).
	erStatementTimeout = 1969
)

// wsrepNotReady is the message Galera sends with error 1047 while the node
// cannot serve queries.
const wsrepNotReady = "wsrep has not yet prepared node"

// ClassifyOptions turns on retrying errors that Classify leaves permanent
// because they usually mean the caller chose not to wait. The zero value is
// Classify's behaviour.
type ClassifyOptions struct {
	// LockWaitNowait retries MySQL's 3572 ER_LOCK_NOWAIT, raised by a
	// locking read with NOWAIT that found a row locked. (MariaDB reports
	// NOWAIT with 1205, which is always retried.)
	LockWaitNowait bool
	// StatementTimeout retries a statement that ran out of time: MySQL's
	// 3024 ER_QUERY_TIMEOUT (max_execution_time) and MariaDB's 1969
	// ER_STATEMENT_TIMEOUT (max_statement_time). The server rolls back only
	// the statement; Run rolls back the transaction before retrying.
	StatementTimeout bool
}

// Classifier returns a classifier that is Classify plus the opt-in errors
// that o turns on. Pass it to New with txn.WithClassifier.
func Classifier(o ClassifyOptions) txn.Classifier {
	return func(err error) txn.Class {
		if c := Classify(err); c != txn.ClassPermanent {
			return c
		}
		me, ok := errchain.As[*mysql.MySQLError](err)
		if !ok {
			return txn.ClassPermanent
		}
		switch me.Number {
		case erLockNowait:
			if o.LockWaitNowait {
				return txn.ClassRetryable
			}
		case erQueryTimeout, erStatementTimeout:
			if o.StatementTimeout {
				return txn.ClassRetryable
			}
		}
		return txn.ClassPermanent
	}
}

// Classify maps an error from the MySQL driver to a txn.Class. It looks
// through wrapping (errors.As) and returns:
//
//   - txn.ClassRetryable for server errors after which the transaction is
//     rolled back, or must be rolled back and run again: 1213 (deadlock,
//     and Galera certification failure), 1205 (lock wait timeout), 1020
//     (MariaDB snapshot isolation conflict), 149 (Galera), 1047 with the
//     message "WSREP has not yet prepared node for application use"
//     (Galera node not ready), 3101 (Group Replication certification
//     failure), and TiDB's 9007, 8002, 8022 and 8028;
//   - txn.ClassConnLost for a lost or failed connection: mysql.ErrInvalidConn,
//     driver.ErrBadConn, the driver's "bad connection" (its unexported
//     errBadConnNoWrite, returned when the connection broke before a
//     request was written, e.g. reset during the handshake), a
//     *net.OpError (a refused, reset or timed-out dial, or a read or write
//     on a broken connection), MariaDB's 1927 (connection killed), 1053
//     (server shutdown in progress), 1040 (too many connections, at
//     connect) and MySQL's 4031 (disconnected for inactivity). Run retries
//     it if it happened before COMMIT, connecting included, and reports
//     an unknown outcome (txn.ErrCommitUnknown) if it happened during
//     COMMIT, since the driver cannot tell whether the server received
//     the COMMIT;
//   - txn.ClassPermanent for everything else, including nil, duplicate keys
//     (1062), 3572 (NOWAIT) and statement timeouts, which Classifier can
//     turn on, and failed logins (1045), which retrying cannot fix.
//
// Classify looks through wrapping (%w, errors.Join, any Unwrap() []error)
// and never panics: a typed nil in the chain, such as a nil
// *mysql.MySQLError wrapped with %w, is skipped as if absent, so an error
// holding only typed nils is permanent.
//
// A server error returned by COMMIT itself (a Galera 1213, say) is a
// definite outcome: the transaction was not committed.
func Classify(err error) txn.Class {
	if err == nil {
		return txn.ClassPermanent
	}
	if me, ok := errchain.As[*mysql.MySQLError](err); ok {
		switch me.Number {
		case erLockDeadlock, erLockWaitTimeout, erCheckRead, haErrLockDeadlock,
			erTransactionRollbackDuringCommit,
			tidbWriteConflict, tidbForUpdateCantRetry, tidbTxnRetryable, tidbInfoSchemaChanged:
			return txn.ClassRetryable
		case erUnknownComError:
			if strings.Contains(strings.ToLower(me.Message), wsrepNotReady) {
				return txn.ClassRetryable
			}
			return txn.ClassPermanent
		case erConnectionKilled, erServerShutdown, erConCountError, erClientInteractionTimeout:
			return txn.ClassConnLost
		}
		return txn.ClassPermanent
	}
	return classifyConn(err)
}

// classifyConn recognises the driver's lost-connection errors. The driver
// returns mysql.ErrInvalidConn whether or not the server received the
// request (https://github.com/go-sql-driver/mysql/issues/1226), so the
// core treats them as an unknown outcome at COMMIT.
//
// While connecting (go-sql-driver/mysql v1.10 connector.Connect, through
// database/sql's BeginTx) the driver returns: the dialer's *net.OpError
// when the connection is refused, reset or times out; ErrInvalidConn when
// reading the greeting or the authentication result fails; its
// unexported errBadConnNoWrite ("bad connection") when writing the
// handshake response fails before any byte was written; and the server's
// error packet as a *mysql.MySQLError. database/sql retries only
// driver.ErrBadConn itself, so the others reach Run.
func classifyConn(err error) txn.Class {
	if errchain.Is(err, mysql.ErrInvalidConn) || errchain.Is(err, driver.ErrBadConn) {
		return txn.ClassConnLost
	}
	if me, ok := errchain.As[*mysql.MySQLError](err); ok {
		switch me.Number {
		case erConnectionKilled, erServerShutdown, erConCountError, erClientInteractionTimeout:
			return txn.ClassConnLost
		}
	}
	if _, ok := errchain.As[*net.OpError](err); ok {
		return txn.ClassConnLost
	}
	if errchain.Walk(err, isBadConnNoWrite) {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}

// badConnNoWrite is the message of go-sql-driver/mysql's unexported
// errBadConnNoWrite (errors.New("bad connection")), which the driver
// normally turns into driver.ErrBadConn but returns as it is from a
// failed connect.
const badConnNoWrite = "bad connection"

// isBadConnNoWrite recognises errBadConnNoWrite by its type (that of
// errors.New) and its exact message.
func isBadConnNoWrite(e error) bool {
	return reflect.TypeOf(e) == reflect.TypeOf(errors.New("")) && e.Error() == badConnNoWrite
}
