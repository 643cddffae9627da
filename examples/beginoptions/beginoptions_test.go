// Package beginoptions checks that a backend's begin options cannot be given
// to another backend's Runner: the compiler refuses them where the
// transaction handles differ, and Begin refuses them, naming both backends,
// where they are the same *sql.Tx.
package beginoptions

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func TestSQLiteOptionOnPgxRunnerDoesNotCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs with the go tool")
	}
	build := func(file string) (string, error) {
		out, err := exec.Command("go", "build", "-o", os.DevNull, filepath.Join("testdata", file)).CombinedOutput()
		return string(out), err
	}
	out, err := build("valid.go")
	require.NoError(t, err, out)
	out, err = build("sqlite_on_pgx.go")
	require.Error(t, err, "sqlite_on_pgx.go compiled")
	assert.Contains(t, out, "cannot use txnsqlite.Deferred() (value of struct type txn.BeginOption[*sql.Tx]) as txn.BeginOption[pgx.Tx] value")
}

func TestMySQLOptionOnSQLiteRunnerRefusedAtBegin(t *testing.T) {
	db, err := txnsqlite.Open(filepath.Join(t.TempDir(), "begin.db"))
	require.NoError(t, err)
	defer db.Close()
	called := false
	err = txnsqlite.New(db).WithBegin(txnmysql.TxOptions(sql.TxOptions{})).Run(context.Background(), func(context.Context, *sql.Tx) error {
		called = true
		return nil
	})
	require.ErrorIs(t, err, txn.ErrBadOption)
	assert.ErrorContains(t, err, "a begin option built by txnmysql was given to a txnsqlite Runner; use txnsqlite's begin options")
	assert.False(t, called, "fn must not run")
}
