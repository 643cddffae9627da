package txnsqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestTxntest runs txntest's forced failures on SQLite (a WAL database
// file opened with txnsqlite.Open: BEGIN IMMEDIATE, busy_timeout 5 s): a
// failure forced before or at COMMIT rolls back what fn, a nested Run and
// txn.Savepoint wrote, one forced after a real COMMIT surfaces as
// ErrCommitUnknown, and CheckRerun tells a buggy fn from a fixed one; see
// integrationtest.Txntest.
func TestTxntest(t *testing.T) {
	sqldb, err := txnsqlite.Open(filepath.Join(t.TempDir(), "txntest.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sqldb.Close() })
	db := &integrationtest.SQLDB{D: integrationtest.SQLite(), DB: sqldb, New: txnsqlite.New, Options: txnsqlite.TxOptions}
	integrationtest.Txntest(t, db, "txnsqlite")
}
