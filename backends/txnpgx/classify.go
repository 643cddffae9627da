package txnpgx

import (
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// ClassifyOptions turns on the retry of conditions that Classify returns
// as permanent because retrying them is a policy choice, not a property of
// the error.
type ClassifyOptions struct {
	// LockNotAvailable retries 55P03 lock_not_available: a row or table
	// lock requested with NOWAIT was held, or lock_timeout expired.
	LockNotAvailable bool
	// QueryCanceled retries 57014 query_canceled: statement_timeout
	// expired or the statement was cancelled by pg_cancel_backend.
	QueryCanceled bool
}

// Classifier returns Classify extended by o.
func Classifier(o ClassifyOptions) txn.Classifier {
	return func(err error) txn.Class { return classify(err, o) }
}

// Classify maps an error from pgx (or from pgx's database/sql driver) to a
// txn.Class:
//
//   - a server error (*pgconn.PgError) by its SQLSTATE, as in the table
//     below; codes not listed are permanent;
//   - an error that pgx reports as raised before anything was sent
//     (pgconn.SafeToRetry) is retryable;
//   - any other connection failure (I/O error, EOF, timeout, failed
//     connect, or a COMMIT interrupted without an answer) is
//     txn.ClassConnLost: retryable before COMMIT, an unknown outcome during
//     it;
//   - anything else is permanent.
//
// Classify looks through wrapping (%w, errors.Join, any Unwrap() []error)
// and never panics: a typed nil in the chain, such as a nil
// *pgconn.PgError wrapped with %w, is skipped as if absent, so an error
// holding only typed nils is permanent.
//
// A server error returned by COMMIT is a definite outcome: 40001 at COMMIT
// means the transaction was rolled back, and Run retries it.
//
//	SQLSTATE  condition                            class
//	40001     serialization_failure                retryable (CockroachDB "restart transaction", YugabyteDB conflicts)
//	40P01     deadlock_detected                    retryable
//	CR000     CockroachDB's legacy retryable error retryable
//	YB003     YugabyteDB's untranslated conflict   retryable
//	XX000     only YugabyteDB's old conflict texts retryable
//	25P03     idle_in_transaction_session_timeout  retryable
//	40003     statement_completion_unknown         ambiguous
//	08007     transaction_resolution_unknown       ambiguous
//	08xxx     connection_exception class           connection lost
//	57P01-05  admin/crash shutdown and the like    connection lost
//	53300     too_many_connections (at connect)    connection lost
//	55P03     lock_not_available                   permanent; retryable with LockNotAvailable
//	57014     query_canceled                       permanent; retryable with QueryCanceled
func Classify(err error) txn.Class {
	return classify(err, ClassifyOptions{})
}

func classify(err error, o ClassifyOptions) txn.Class {
	if err == nil {
		return txn.ClassPermanent
	}
	if pgErr, ok := errchain.As[*pgconn.PgError](err); ok {
		return classifyServer(pgErr, o)
	}
	return classifyConn(err)
}

// classifyServer classifies an error the server sent.
func classifyServer(e *pgconn.PgError, o ClassifyOptions) txn.Class {
	switch e.Code {
	// PostgreSQL Appendix A, class 40 "Transaction Rollback": 40001
	// serialization_failure. Raised under REPEATABLE READ and SERIALIZABLE
	// when the transaction cannot be serialized; the manual (13.5,
	// "Serialization Failure Handling") says to retry the whole
	// transaction. CockroachDB reports all its transaction retry errors
	// with 40001 and a message containing "restart transaction";
	// YugabyteDB reports its conflicts and read restarts with 40001 too.
	case "40001":
		return txn.ClassRetryable
	// 40P01 deadlock_detected: this transaction was chosen as the victim of
	// a deadlock and rolled back; 13.5 advises retrying it. YugabyteDB
	// uses the same code.
	case "40P01":
		return txn.ClassRetryable
	// CR000: CockroachDB's former "retryable error" extension code. The
	// server no longer sends it, but cockroach-go still retries it for
	// older clusters.
	case "CR000":
		return txn.ClassRetryable
	// YB003: YugabyteDB's internal transaction-conflict code, which some
	// paths send instead of translating it to 40001 (yugabyte-db issue
	// 31736).
	case "YB003":
		return txn.ClassRetryable
	// XX000 internal_error: YugabyteDB before 1.2.1 sent serialization
	// errors with this code and texts such as "Restart read required" or
	// "Operation failed. Try again."; any other internal error is
	// permanent.
	case "XX000":
		if isYugabyteConflictText(e.Message) {
			return txn.ClassRetryable
		}
		return txn.ClassPermanent
	// 25P03 idle_in_transaction_session_timeout: the server ended the
	// session because the transaction sat idle too long; the transaction
	// was rolled back with it, so nothing was committed. YugabyteDB's
	// error-code guide says the client can reconnect and retry.
	case "25P03":
		return txn.ClassRetryable
	// 40003 statement_completion_unknown: the server itself cannot tell
	// whether the statement completed. CockroachDB sends it as "result is
	// ambiguous" when a commit's acknowledgement was lost.
	case "40003":
		return txn.ClassAmbiguous
	// 08007 transaction_resolution_unknown (class 08 "Connection
	// Exception"): the connection failed while the transaction was being
	// resolved.
	case "08007":
		return txn.ClassAmbiguous
	// 55P03 lock_not_available (class 55 "Object Not In Prerequisite
	// State"): NOWAIT found the row locked, or lock_timeout expired. The
	// statement failed; retrying is a policy, hence opt-in.
	case "55P03":
		if o.LockNotAvailable {
			return txn.ClassRetryable
		}
		return txn.ClassPermanent
	// 57014 query_canceled (class 57 "Operator Intervention"):
	// statement_timeout expired or someone cancelled the statement.
	// Opt-in, since a statement that timed out may time out again.
	case "57014":
		if o.QueryCanceled {
			return txn.ClassRetryable
		}
		return txn.ClassPermanent
	// 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
	// cannot_connect_now, 57P04 database_dropped, 57P05
	// idle_session_timeout (class 57 "Operator Intervention"): the server
	// is ending or refusing the session. Treated like a lost connection:
	// retryable before COMMIT, unknown during it.
	case "57P01", "57P02", "57P03", "57P04", "57P05":
		return txn.ClassConnLost
	// 53300 too_many_connections (class 53 "Insufficient Resources"): the
	// server refused a new session because max_connections was reached.
	// It is only raised while connecting, before the transaction began,
	// so it is retried like a lost connection.
	case "53300":
		return txn.ClassConnLost
	}
	// Class 08 "Connection Exception" (08000 connection_exception, 08003
	// connection_does_not_exist, 08006 connection_failure, 08001, 08004,
	// 08P01 protocol_violation): the connection is unusable.
	if strings.HasPrefix(e.Code, "08") {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}

// isYugabyteConflictText recognises the messages old YugabyteDB versions sent
// with XX000 for what later versions report as 40001.
func isYugabyteConflictText(msg string) bool {
	return strings.Contains(msg, "Restart read required") ||
		strings.Contains(msg, "Operation failed. Try again")
}

// classifyConn classifies an error that is not a server error.
func classifyConn(err error) txn.Class {
	if err == nil {
		return txn.ClassPermanent
	}
	if _, ok := errchain.As[*commitInterruptedError](err); ok {
		return txn.ClassConnLost
	}
	if _, ok := errchain.As[*pgconn.PgError](err); ok {
		return txn.ClassPermanent
	}
	if errchain.Any(err, pgconn.SafeToRetry) {
		// pgx guarantees that nothing was sent.
		return txn.ClassRetryable
	}
	if isConnError(err) {
		return txn.ClassConnLost
	}
	return txn.ClassPermanent
}

// isConnError reports a failure of the connection itself: a failed
// connect (*pgconn.ConnectError: refused, reset, timed out; a server
// error during the handshake is classified by its SQLSTATE before this is
// reached, so a failed password stays permanent), a network error (*net.OpError and any net.Error), EOF, a
// closed connection, or a pgx timeout. pgx's own helpers walk the chain
// with errors.As, so they are called on one error of it at a time
// (errchain.Any), never on a typed nil.
func isConnError(err error) bool {
	if errchain.Is(err, io.EOF) || errchain.Is(err, io.ErrUnexpectedEOF) || errchain.Is(err, net.ErrClosed) {
		return true
	}
	if errchain.Any(err, isConnClosed) {
		return true
	}
	if _, ok := errchain.As[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errchain.As[net.Error](err); ok {
		return true
	}
	return errchain.Any(err, pgconn.Timeout)
}

// connClosedText is the text of pgconn.ErrConnClosed, which later pgx
// releases (v5.13) return, wrapped, for an operation on a connection that
// an earlier failure of the same operation closed, after its request may
// have been sent. The module is built with pgx v5.8, which has no such
// variable, so the error is known by its text; v5.8's own "conn closed" is
// a lock failure, which reports SafeToRetry and is classified before this.
const connClosedText = "conn closed"

// isConnClosed reports whether err itself (not its chain) is pgx's
// "conn closed".
func isConnClosed(err error) bool { return err.Error() == connClosedText }
