package txnbun_test

import (
	"testing"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestKeptHandleNeverWritesAfterRun: the bun.Tx fn receives, the one a
// savepoint receives and the contexts fn keeps past its Run (committed or
// rolled back, with and without conflict keys) fail every statement after
// the Run and during a later Run on the same single connection, and none
// of their rows reaches the database; see integrationtest.KeptHandles.
func TestKeptHandleNeverWritesAfterRun(t *testing.T) {
	forEach(t, func(t *testing.T, s server) {
		for name, opts := range map[string][]txn.CallOption{"plain": nil, "Keys": {txn.Keys("k")}} {
			t.Run(name, func(t *testing.T) {
				db := s.suiteDB(t)
				db.db.SetMaxOpenConns(1)
				integrationtest.KeptHandles(t, db, prefix, db.Runner(), opts...)
			})
		}
	})
}
