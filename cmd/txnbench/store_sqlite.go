package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/txnkit/txn/backends/txnsqlite"
	"modernc.org/sqlite"
)

// openSQLite opens the SQLite database c.dsn names (a file path, or a
// modernc.org/sqlite DSN with parameters), or a new one in a temporary
// directory when c.dsn is empty. A bare path is opened as txnsqlite.Open
// does: WAL, busy_timeout, BEGIN IMMEDIATE unless --sqlite-begin deferred.
func openSQLite(ctx context.Context, c *config) (Store, func(), error) {
	cleanup := func() {}
	dsn := c.dsn
	if dsn == "" {
		dir, err := os.MkdirTemp("", "txnbench-")
		if err != nil {
			return nil, nil, fmt.Errorf("sqlite: temporary directory: %w", err)
		}
		cleanup = func() { _ = os.RemoveAll(dir) }
		dsn = filepath.Join(dir, "bench.db")
	}
	if !strings.Contains(dsn, "?") {
		// SQLite reports a missing directory as "out of memory (14)".
		if dir := filepath.Dir(dsn); !strings.HasPrefix(dsn, "file:") {
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				cleanup()
				return nil, nil, fmt.Errorf("sqlite: --dsn %s: directory %s does not exist; want the path of a database file in an existing directory", c.dsn, dir)
			}
		}
		d, err := txnsqlite.DSN(dsn)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("sqlite: %w", err)
		}
		dsn = d
	}
	if c.sqliteBegin == "deferred" {
		dsn = strings.ReplaceAll(dsn, "_txlock=immediate", "_txlock=deferred")
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("sqlite: %w", err)
	}
	db.SetMaxOpenConns(c.connections())
	db.SetMaxIdleConns(c.connections())
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		cleanup()
		return nil, nil, fmt.Errorf("sqlite: open %s: %w", dsn, err)
	}
	s := &sqlStore{
		db:     db,
		prefix: c.tablePrefix,
		ddl: []string{
			`CREATE TABLE %[1]saccounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)`,
			`CREATE TABLE %[1]sledger (id INTEGER PRIMARY KEY, from_id INTEGER NOT NULL, to_id INTEGER NOT NULL, amount INTEGER NOT NULL)`,
		},
		newRunner: txnsqlite.New,
		code:      sqliteCode,
		batch:     400, // SQLite allows 32766 parameters per statement
	}
	// SQLite transactions are serializable whatever the level asked for;
	// the driver ignores it, so none is passed.
	return s, cleanup, nil
}

// sqliteCode names an SQLite error by its (extended) result code.
func sqliteCode(err error) string {
	var e *sqlite.Error
	if errors.As(err, &e) {
		return sqliteCodeName(e.Code())
	}
	return ""
}

// sqliteCodeName returns the symbolic name of the codes a contended run
// meets, and the number of the others.
func sqliteCodeName(code int) string {
	switch code {
	case txnsqlite.CodeBusy:
		return "SQLITE_BUSY"
	case txnsqlite.CodeBusySnapshot:
		return "SQLITE_BUSY_SNAPSHOT"
	case txnsqlite.CodeBusyRecovery:
		return "SQLITE_BUSY_RECOVERY"
	case txnsqlite.CodeBusyTimeout:
		return "SQLITE_BUSY_TIMEOUT"
	case txnsqlite.CodeLocked:
		return "SQLITE_LOCKED"
	case txnsqlite.CodeLockedSharedCache:
		return "SQLITE_LOCKED_SHAREDCACHE"
	}
	return "sqlite " + strconv.Itoa(code)
}
