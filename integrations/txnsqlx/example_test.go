package txnsqlx_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnsqlx"
)

// A transfer on SQLite (modernc.org/sqlite, opened with txnsqlite.DSN's
// settings) with txnsqlite's classifier. fn receives the *sqlx.Tx; when
// SQLite reports SQLITE_BUSY, Run rolls back and runs fn again in a new
// transaction. The OnCommit callback runs once, after the commit.
func ExampleNew_classifier() {
	dir, err := os.MkdirTemp("", "txnsqlx-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dsn, err := txnsqlite.DSN(filepath.Join(dir, "bank.db"))
	if err != nil {
		log.Fatal(err)
	}
	db := sqlx.MustOpen("sqlite", dsn)
	defer db.Close()
	db.MustExec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
	db.MustExec("INSERT INTO accounts VALUES (1, 100), (2, 0)")

	r := txnsqlx.New(db, txn.WithClassifier(txnsqlite.Classify), txn.MaxAttempts(10)) // build once, share
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind("UPDATE accounts SET balance = balance - ? WHERE id = ?"), 30, 1); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind("UPDATE accounts SET balance = balance + ? WHERE id = ?"), 30, 2); err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() { fmt.Println("transferred 30") })
	})
	if err != nil {
		log.Fatal(err)
	}
	var balances []int
	if err := db.Select(&balances, "SELECT balance FROM accounts ORDER BY id"); err != nil {
		log.Fatal(err)
	}
	fmt.Println(balances)
	// Output:
	// transferred 30
	// [70 30]
}

// On MySQL or MariaDB, give the Runner txnmysql's classifier: deadlocks
// (1213) and lock wait timeouts (1205) are retried after a full rollback. A
// nested Run is a savepoint: its permanent error undoes only its own work.
func ExampleNew_mysql() {
	db := sqlx.MustOpen("mysql", "app:secret@tcp(127.0.0.1:3306)/shop")
	defer db.Close()
	r := txnsqlx.New(db, txn.WithClassifier(txnmysql.Classify), txn.MaxAttempts(5))
	ctx := context.Background()
	err := r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE stock SET qty = qty - 1 WHERE sku = ?", "A-1"); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO coupons_used (code) VALUES (?)", "WELCOME")
			return err
		})
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == 1062 {
			err = nil // coupon already used: the order goes on without it
		}
		return err
	})
	if err != nil {
		log.Print(err)
	}
}
