package txnmysql_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
)

func myErr(n uint16, msg string) *mysql.MySQLError {
	return &mysql.MySQLError{Number: n, Message: msg}
}

// TestClassify covers every row of the classification table with the
// error values the driver produces, bare and wrapped.
func TestClassify(t *testing.T) {
	const (
		P = txn.ClassPermanent
		R = txn.ClassRetryable
		C = txn.ClassConnLost
	)
	cases := []struct {
		name string
		err  error
		want Class3
	}{
		{"nil", nil, Class3{P, P, P}},
		{"1213 deadlock", myErr(1213, "Deadlock found when trying to get lock; try restarting transaction"), Class3{R, R, R}},
		{"1213 galera certification failure", myErr(1213, "Deadlock: wsrep aborted transaction"), Class3{R, R, R}},
		{"1205 lock wait timeout", myErr(1205, "Lock wait timeout exceeded; try restarting transaction"), Class3{R, R, R}},
		{"3572 NOWAIT", myErr(3572, "Statement aborted because lock(s) could not be acquired immediately and NOWAIT is set."), Class3{P, R, P}},
		{"1020 MariaDB record changed", myErr(1020, "Record has changed since last read in table 't'"), Class3{R, R, R}},
		{"149 galera lock deadlock", myErr(149, "Lock deadlock; Retry transaction"), Class3{R, R, R}},
		{"1047 galera node not ready", myErr(1047, "WSREP has not yet prepared node for application use"), Class3{R, R, R}},
		{"1047 unknown command", myErr(1047, "Unknown command"), Class3{P, P, P}},
		{"3101 group replication rollback", myErr(3101, "Plugin instructed the server to rollback the current transaction."), Class3{R, R, R}},
		{"9007 TiDB write conflict", myErr(9007, "Write conflict, txnStartTS=1, conflictStartTS=2"), Class3{R, R, R}},
		{"8002 TiDB select for update conflict", myErr(8002, "[tikv:8002]can not retry select for update statement"), Class3{R, R, R}},
		{"8022 TiDB commit rolled back", myErr(8022, "Error: KV error safe to retry"), Class3{R, R, R}},
		{"8028 TiDB schema changed", myErr(8028, "Information schema is changed during the execution of the statement"), Class3{R, R, R}},
		{"1927 MariaDB connection killed", myErr(1927, "Connection was killed"), Class3{C, C, C}},
		{"3024 MySQL query timeout", myErr(3024, "Query execution was interrupted, maximum statement execution time exceeded"), Class3{P, P, R}},
		{"1969 MariaDB statement timeout", myErr(1969, "Query execution was interrupted (max_statement_time exceeded)"), Class3{P, P, R}},
		{"1062 duplicate key", myErr(1062, "Duplicate entry '1' for key 'PRIMARY'"), Class3{P, P, P}},
		{"1792 read-only transaction", myErr(1792, "Cannot execute statement in a READ ONLY transaction"), Class3{P, P, P}},
		{"1317 query interrupted", myErr(1317, "Query execution was interrupted"), Class3{P, P, P}},
		{"mysql.ErrInvalidConn", mysql.ErrInvalidConn, Class3{C, C, C}},
		{"driver.ErrBadConn", driver.ErrBadConn, Class3{C, C, C}},
		{"refused dial", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, Class3{C, C, C}},
		{"read on a broken connection", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, Class3{C, C, C}},
		{"mysql.ErrPktSync", mysql.ErrPktSync, Class3{P, P, P}},
		{"context.Canceled", context.Canceled, Class3{P, P, P}},
		{"context.DeadlineExceeded", context.DeadlineExceeded, Class3{P, P, P}},
		{"io.EOF", io.EOF, Class3{P, P, P}},
		{"other", errors.New("boom"), Class3{P, P, P}},
	}
	nowait := txnmysql.Classifier(txnmysql.ClassifyOptions{LockWaitNowait: true})
	timeout := txnmysql.Classifier(txnmysql.ClassifyOptions{StatementTimeout: true})
	zero := txnmysql.Classifier(txnmysql.ClassifyOptions{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, err := range []error{tc.err, wrap(tc.err)} {
				assert.Equal(t, tc.want.def, txnmysql.Classify(err), "Classify(%v)", err)
				assert.Equal(t, tc.want.def, zero(err), "Classifier({})(%v)", err)
				assert.Equal(t, tc.want.nowait, nowait(err), "Classifier(LockWaitNowait)(%v)", err)
				assert.Equal(t, tc.want.timeout, timeout(err), "Classifier(StatementTimeout)(%v)", err)
			}
		})
	}
}

// Class3 is what Classify, Classifier(LockWaitNowait) and
// Classifier(StatementTimeout) return for one error.
type Class3 struct{ def, nowait, timeout txn.Class }

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("repo: transfer: %w", err)
}
