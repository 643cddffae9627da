package txnmysql_test

import (
	"testing"

	"github.com/txnkit/txn/internal/integrationtest"
)

// TestTxntest runs txntest's forced failures on MariaDB: a failure forced
// before or at COMMIT rolls back on the server what fn, a nested Run and
// txn.Savepoint wrote, one forced after a real COMMIT surfaces as
// ErrCommitUnknown, and CheckRerun tells a buggy fn from a fixed one; see
// integrationtest.Txntest.
func TestTxntest(t *testing.T) {
	db := mariaDB(openDB(t, nil))
	integrationtest.Txntest(t, db, "txnmysql")
}
