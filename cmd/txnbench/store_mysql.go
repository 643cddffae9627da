package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"

	"github.com/go-sql-driver/mysql"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
)

// openMySQL connects to the MySQL or MariaDB server c.dsn names.
func openMySQL(ctx context.Context, c *config) (Store, error) {
	cfg, err := mysql.ParseDSN(c.dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql: --dsn: %w", err)
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(c.connections())
	db.SetMaxIdleConns(c.connections())
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, mysqlConnectError(cfg.Addr, cfg.User, err)
	}
	s := &sqlStore{
		db:     db,
		prefix: c.tablePrefix,
		ddl: []string{
			`CREATE TABLE %[1]saccounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB`,
			`CREATE TABLE %[1]sledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, from_id BIGINT NOT NULL, to_id BIGINT NOT NULL, amount BIGINT NOT NULL) ENGINE=InnoDB`,
		},
		newRunner: txnmysql.New,
		code:      mysqlCode,
		batch:     1000,
	}
	if lvl, ok := sqlIsolation(c.isolation); ok {
		s.txOpts = &sql.TxOptions{Isolation: lvl}
		s.begin = []txn.BeginOption[*sql.Tx]{txnmysql.TxOptions(*s.txOpts)}
	}
	return s, nil
}

// mysqlConnectError tells a server that could not be reached from one
// that answered and refused the connection (access denied, unknown
// database): only the second carries an error number from the server.
func mysqlConnectError(addr, user string, err error) error {
	var e *mysql.MySQLError
	if errors.As(err, &e) {
		return fmt.Errorf("mysql: reached the server at %s, but it refused the connection of user %q "+
			"(authentication, user or database; fix --dsn or TXN_MYSQL_DSN): %w", addr, user, err)
	}
	return fmt.Errorf("mysql: server unreachable at %s (is it running? set --dsn or TXN_MYSQL_DSN): %w", addr, err)
}

// mysqlCode names a MySQL error by its number, and a broken connection.
func mysqlCode(err error) string {
	var e *mysql.MySQLError
	switch {
	case errors.As(err, &e):
		switch e.Number {
		case 1213:
			return "1213 deadlock"
		case 1205:
			return "1205 lock wait timeout"
		}
		return strconv.Itoa(int(e.Number))
	case errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, driver.ErrBadConn):
		return "connection lost"
	}
	return ""
}

// sqlIsolation maps --isolation to database/sql's level; false for the
// server's default.
func sqlIsolation(name string) (sql.IsolationLevel, bool) {
	switch name {
	case "read-committed":
		return sql.LevelReadCommitted, true
	case "repeatable-read":
		return sql.LevelRepeatableRead, true
	case "serializable":
		return sql.LevelSerializable, true
	}
	return sql.LevelDefault, false
}
