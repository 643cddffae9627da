package txnsqlite_test

import (
	"testing"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun: the *sql.Tx, the savepoint's handle
// and the contexts fn keeps past its Run (committed or rolled back, with
// and without conflict keys) fail every INSERT and SELECT after the Run and
// during a later Run on the same single connection, and none of their
// rows reaches the database; see integrationtest.KeptHandles.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	for name, opts := range map[string][]txn.CallOption{"plain": nil, "Keys": {txn.Keys("k")}} {
		t.Run(name, func(t *testing.T) {
			db := sqliteDB(t)
			db.DB.SetMaxOpenConns(1)
			integrationtest.KeptHandles(t, db, "txnsqlite", db.Runner(), opts...)
		})
	}
}
