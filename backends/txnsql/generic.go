package txnsql

import (
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// ClassifyGeneric classifies the errors of database/sql drivers without
// importing any of them, through the methods their error types expose. It
// returns txn.ClassConnLost for driver.ErrBadConn (as Classify does);
// txn.ClassRetryable for an error whose SQLState() string method reports
// 40001 (serialization failure, the SQL standard's code) or 40P01
// (PostgreSQL's deadlock_detected), as the errors of pgx and lib/pq do, and
// for an error whose Code() int method reports SQLITE_BUSY or SQLITE_LOCKED
// or one of their extended codes, as those of modernc.org/sqlite and
// github.com/glebarez/go-sqlite do; and txn.ClassPermanent for everything
// else, including nil and typed nil pointers.
//
// It is the fallback of the integration modules (txngorm, txnsqlx), which
// import no driver. The backends' classifiers (txnpgx.Classify,
// txnmysql.Classify, txnsqlite.Classify) know much more; MySQL and MariaDB
// errors expose no such method and need txnmysql.Classify.
func ClassifyGeneric(err error) txn.Class {
	if c := Classify(err); c != txn.ClassPermanent {
		return c
	}
	if st, ok := errchain.As[interface{ SQLState() string }](err); ok {
		switch st.SQLState() {
		case "40001", "40P01":
			return txn.ClassRetryable
		}
	}
	if sc, ok := errchain.As[interface{ Code() int }](err); ok {
		switch sc.Code() & 0xff {
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return txn.ClassRetryable
		}
	}
	return txn.ClassPermanent
}
