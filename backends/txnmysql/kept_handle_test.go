package txnmysql_test

import (
	"testing"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun: the *sql.Tx, the savepoint's handle
// and the contexts fn keeps past its Run (committed or rolled back) fail
// every INSERT and SELECT after the Run and during a later Run on the same
// single connection, and none of their rows reaches the database; see
// integrationtest.KeptHandles. With DatabaseKeys the transaction runs on a
// connection BeginLocked reserved, which goes back to the pool after the
// keys are released.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		runner []txn.RunnerOption
		call   []txn.CallOption
	}{
		{name: "plain"},
		{name: "Keys", call: []txn.CallOption{txn.Keys("k")}},
		{name: "DatabaseKeys", runner: []txn.RunnerOption{txn.DatabaseKeys()}, call: []txn.CallOption{txn.Keys("k")}},
		{name: "DatabaseKeysNoKeys", runner: []txn.RunnerOption{txn.DatabaseKeys()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sqlDB := openDB(t, nil)
			sqlDB.SetMaxOpenConns(1)
			db := mariaDB(sqlDB)
			integrationtest.KeptHandles(t, db, "txnmysql", db.Runner(tc.runner...), tc.call...)
		})
	}
}
