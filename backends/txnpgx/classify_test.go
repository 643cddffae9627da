package txnpgx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn"
)

// safeErr is a connection error that pgx would report as raised before
// anything was sent (pgconn.SafeToRetry finds the method).
type safeErr struct{}

func (safeErr) Error() string     { return "conn closed" }
func (safeErr) SafeToRetry() bool { return true }

func pgErr(code, msg string) error {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: msg}
}

// TestClassifyTable covers every row of the classification table, with the
// default options and with each opt-in.
func TestClassifyTable(t *testing.T) {
	netOp := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	all := ClassifyOptions{LockNotAvailable: true, QueryCanceled: true}
	tests := []struct {
		name string
		err  error
		def  txn.Class // Classify
		opt  txn.Class // Classifier(all)
	}{
		{"nil", nil, txn.ClassPermanent, txn.ClassPermanent},
		{"40001 serialization_failure", pgErr("40001", "could not serialize access due to read/write dependencies among transactions"), txn.ClassRetryable, txn.ClassRetryable},
		{"40001 wrapped", fmt.Errorf("transfer: %w", pgErr("40001", "x")), txn.ClassRetryable, txn.ClassRetryable},
		{"40001 CockroachDB restart transaction", pgErr("40001", "restart transaction: TransactionRetryWithProtoRefreshError: TransactionRetryError: retry txn (RETRY_SERIALIZABLE)"), txn.ClassRetryable, txn.ClassRetryable},
		{"40001 YugabyteDB read restart", pgErr("40001", "Restart read required at: { read: { physical: 1 } }"), txn.ClassRetryable, txn.ClassRetryable},
		{"40P01 deadlock_detected", pgErr("40P01", "deadlock detected"), txn.ClassRetryable, txn.ClassRetryable},
		{"CR000 CockroachDB legacy retryable", pgErr("CR000", "restart transaction"), txn.ClassRetryable, txn.ClassRetryable},
		{"YB003 YugabyteDB conflict", pgErr("YB003", "could not serialize access due to concurrent update"), txn.ClassRetryable, txn.ClassRetryable},
		{"XX000 old YugabyteDB read restart", pgErr("XX000", "Query error: Restart read required at: ..."), txn.ClassRetryable, txn.ClassRetryable},
		{"XX000 old YugabyteDB try again", pgErr("XX000", "Operation failed. Try again.: Conflicts with higher priority transaction"), txn.ClassRetryable, txn.ClassRetryable},
		{"XX000 other internal error", pgErr("XX000", "cache lookup failed for relation 1"), txn.ClassPermanent, txn.ClassPermanent},
		{"25P03 idle_in_transaction_session_timeout", pgErr("25P03", "terminating connection due to idle-in-transaction timeout"), txn.ClassRetryable, txn.ClassRetryable},
		{"40003 statement_completion_unknown", pgErr("40003", "result is ambiguous"), txn.ClassAmbiguous, txn.ClassAmbiguous},
		{"08007 transaction_resolution_unknown", pgErr("08007", "x"), txn.ClassAmbiguous, txn.ClassAmbiguous},
		{"08000 connection_exception", pgErr("08000", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"08003 connection_does_not_exist", pgErr("08003", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"08006 connection_failure", pgErr("08006", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"08001 unable_to_establish", pgErr("08001", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"08004 rejected_establishment", pgErr("08004", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"08P01 protocol_violation", pgErr("08P01", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"57P01 admin_shutdown", pgErr("57P01", "terminating connection due to administrator command"), txn.ClassConnLost, txn.ClassConnLost},
		{"57P02 crash_shutdown", pgErr("57P02", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"57P03 cannot_connect_now", pgErr("57P03", "the database system is starting up"), txn.ClassConnLost, txn.ClassConnLost},
		{"57P04 database_dropped", pgErr("57P04", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"57P05 idle_session_timeout", pgErr("57P05", "x"), txn.ClassConnLost, txn.ClassConnLost},
		{"55P03 lock_not_available", pgErr("55P03", "could not obtain lock on row in relation"), txn.ClassPermanent, txn.ClassRetryable},
		{"57014 query_canceled", pgErr("57014", "canceling statement due to statement timeout"), txn.ClassPermanent, txn.ClassRetryable},
		{"23505 unique_violation", pgErr("23505", "duplicate key value violates unique constraint"), txn.ClassPermanent, txn.ClassPermanent},
		{"40002 integrity violation at commit", pgErr("40002", "x"), txn.ClassPermanent, txn.ClassPermanent},
		{"25006 read_only_sql_transaction", pgErr("25006", "x"), txn.ClassPermanent, txn.ClassPermanent},
		{"SafeToRetry connection error", fmt.Errorf("begin: %w", safeErr{}), txn.ClassRetryable, txn.ClassRetryable},
		{"io.EOF", fmt.Errorf("read: %w", io.EOF), txn.ClassConnLost, txn.ClassConnLost},
		{"io.ErrUnexpectedEOF", io.ErrUnexpectedEOF, txn.ClassConnLost, txn.ClassConnLost},
		{"net.ErrClosed", net.ErrClosed, txn.ClassConnLost, txn.ClassConnLost},
		// pgconn.ErrConnClosed of pgx v5.13, wrapped as pgx wraps it (its
		// pgconnError is not SafeToRetry: the request may have been sent).
		{"conn closed (pgx v5.13)", fmt.Errorf("read: %w", errors.New("conn closed")), txn.ClassConnLost, txn.ClassConnLost},
		{"connection reset", netOp, txn.ClassConnLost, txn.ClassConnLost},
		{"connect error", &pgconn.ConnectError{Config: &pgconn.Config{}}, txn.ClassConnLost, txn.ClassConnLost},
		{"commit interrupted", &commitInterruptedError{err: context.Canceled}, txn.ClassConnLost, txn.ClassConnLost},
		{"context canceled", context.Canceled, txn.ClassPermanent, txn.ClassPermanent},
		{"ErrTxCommitRollback", fmt.Errorf("txnpgx: commit: %w", pgx.ErrTxCommitRollback), txn.ClassPermanent, txn.ClassPermanent},
		{"ErrNoRows", pgx.ErrNoRows, txn.ClassPermanent, txn.ClassPermanent},
		{"plain error", errors.New("boom"), txn.ClassPermanent, txn.ClassPermanent},
	}
	opt := Classifier(all)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.def, Classify(tt.err), "Classify")
			assert.Equal(t, tt.opt, opt(tt.err), "Classifier(all)")
		})
	}
}

// TestClassifyOptionsSeparate: each opt-in turns on only its own code.
func TestClassifyOptionsSeparate(t *testing.T) {
	lock := Classifier(ClassifyOptions{LockNotAvailable: true})
	canceled := Classifier(ClassifyOptions{QueryCanceled: true})
	assert.Equal(t, txn.ClassRetryable, lock(pgErr("55P03", "")), "LockNotAvailable retries 55P03")
	assert.Equal(t, txn.ClassPermanent, lock(pgErr("57014", "")), "LockNotAvailable retries 55P03 only")
	assert.Equal(t, txn.ClassRetryable, canceled(pgErr("57014", "")), "QueryCanceled retries 57014")
	assert.Equal(t, txn.ClassPermanent, canceled(pgErr("55P03", "")), "QueryCanceled retries 57014 only")
}

// TestClassifyConnRules: the connection rules, which complete a classifier
// given with txn.WithClassifier, recognise connection errors and leave
// server errors to that classifier.
func TestClassifyConnRules(t *testing.T) {
	b := &backend{}
	assert.Equal(t, txn.ClassConnLost, b.ClassifyConn(&commitInterruptedError{err: io.EOF}), "interrupted commit")
	assert.Equal(t, txn.ClassRetryable, b.ClassifyConn(safeErr{}), "SafeToRetry")
	assert.Equal(t, txn.ClassPermanent, b.ClassifyConn(pgErr("40001", "")), "server errors are the classifier's")
}
