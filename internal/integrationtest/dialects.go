package integrationtest

import (
	"database/sql"
	"reflect"

	"github.com/txnkit/txn/internal/errchain"
)

// Postgres describes PostgreSQL: conflicting Runs use REPEATABLE READ
// (a lost update is a 40001), the bank transfer locks with FOR UPDATE.
func Postgres() Dialect {
	return Dialect{
		Name: "postgres", TxOptions: sql.TxOptions{Isolation: sql.LevelRepeatableRead},
		ForUpdate: " FOR UPDATE", Conflict: PostgresConflict,
	}
}

// MariaDB describes MariaDB (and MySQL): a read-then-write takes a share
// lock, so that two of them deadlock (1213); InnoDB rolls the whole
// transaction back on 1213, and later statements of fn would autocommit
// until the core stops them.
func MariaDB() Dialect {
	return Dialect{
		Name: "mariadb", ShareLock: " LOCK IN SHARE MODE", ForUpdate: " FOR UPDATE", Conflict: MySQLDeadlock,
	}
}

// SQLite describes SQLite with DEFERRED transactions: a writer holds the
// only write lock, and a transaction that read a stale snapshot finds the
// database busy.
func SQLite() Dialect {
	return Dialect{Name: "sqlite", SingleWriter: true, Conflict: SQLiteBusy}
}

// PostgresConflict reports whether err's tree holds a PostgreSQL
// serialization failure (40001) or deadlock (40P01), read through a
// SQLState() method (pgx, lib/pq) or a Field(byte) method (bun's
// pgdriver).
func PostgresConflict(err error) bool {
	return errchain.Walk(err, func(e error) bool {
		var code string
		switch e := e.(type) {
		case interface{ SQLState() string }:
			code = e.SQLState()
		case interface{ Field(byte) string }:
			code = e.Field('C')
		}
		return code == "40001" || code == "40P01"
	})
}

// MySQLDeadlock reports whether err's tree holds a MySQL/MariaDB deadlock
// (1213) as github.com/go-sql-driver/mysql reports it: a MySQLError whose
// Number is 1213 (the type has no method to read it through).
func MySQLDeadlock(err error) bool {
	return errchain.Walk(err, func(e error) bool {
		v := reflect.Indirect(reflect.ValueOf(e))
		if v.Kind() != reflect.Struct || v.Type().Name() != "MySQLError" {
			return false
		}
		n := v.FieldByName("Number")
		return n.IsValid() && n.CanUint() && n.Uint() == 1213
	})
}

// SQLiteBusy reports whether err's tree holds SQLITE_BUSY or one of its
// extended codes, read through a Code() int method (modernc.org/sqlite,
// github.com/glebarez/go-sqlite).
func SQLiteBusy(err error) bool {
	return errchain.Walk(err, func(e error) bool {
		c, ok := e.(interface{ Code() int })
		return ok && c.Code()&0xff == 5
	})
}
