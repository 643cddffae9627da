package txnsqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/internal/integrationtest"
)

// TestCancelStorm runs integrationtest.CancelStorm over a WAL database
// whose pool holds one connection: Runs cancelled at every stage leave the
// connection outside any transaction, never commit once the cancellation
// was seen before COMMIT, and lose or double nothing.
func TestCancelStorm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "storm.db")
	sqlDB, err := txnsqlite.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	sqlDB.SetMaxOpenConns(1)
	db := &integrationtest.SQLDB{D: integrationtest.SQLite(), DB: sqlDB, New: txnsqlite.New, Options: txnsqlite.TxOptions}
	// Another connection to the file takes the write lock at once if the
	// pool's connection holds none.
	other := openDSN(t, path, "_pragma=busy_timeout(0)")
	idle := func(ctx context.Context) error {
		conn, err := sqlDB.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
			return fmt.Errorf("the pool's connection cannot begin: %w", err)
		}
		if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
			return err
		}
		if _, err := other.ExecContext(ctx, "BEGIN IMMEDIATE; ROLLBACK"); err != nil {
			return fmt.Errorf("the write lock is held: %w", err)
		}
		return nil
	}
	counts := integrationtest.CancelStorm(t, db, "txnsqlite", db.Runner(), idle)
	t.Log(integrationtest.FormatCounts(counts))
}

// TestCancelJustBeforeCommit runs integrationtest.CancelJustBeforeCommit
// over a pool of one connection.
func TestCancelJustBeforeCommit(t *testing.T) {
	db := sqliteDB(t)
	db.DB.SetMaxOpenConns(1)
	integrationtest.CancelJustBeforeCommit(t, db, "txnsqlite", db.Runner())
}
