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
	integrationtest.Txntest(t, sqliteDB(t), "txnsqlite")
}

// sqliteDB opens a WAL database file with txnsqlite.Open (BEGIN
// IMMEDIATE, busy_timeout 5 s) for the shared scenarios.
func sqliteDB(t *testing.T) *integrationtest.SQLDB {
	t.Helper()
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "shared.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return &integrationtest.SQLDB{D: integrationtest.SQLite(), DB: db, New: txnsqlite.New, Options: txnsqlite.TxOptions}
}
