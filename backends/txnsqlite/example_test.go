package txnsqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
)

// Open a database file in WAL mode with BEGIN IMMEDIATE and a busy timeout,
// and move money between two accounts in a transaction that is retried when
// SQLite reports a lost race.
func Example() {
	dir, err := os.MkdirTemp("", "txnsqlite-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := txnsqlite.Open(filepath.Join(dir, "bank.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
		INSERT INTO accounts VALUES (1, 100), (2, 0)`); err != nil {
		log.Fatal(err)
	}

	r := txnsqlite.New(db, txn.MaxAttempts(10))
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - 30 WHERE id = 1"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + 30 WHERE id = 2")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	// A read-only transaction begins DEFERRED and does not queue behind writers.
	readers := r.WithBegin(txnsqlite.Deferred())
	total, err := txn.Do(ctx, readers, func(ctx context.Context, tx *sql.Tx) (int, error) {
		var n int
		err := tx.QueryRowContext(ctx, "SELECT sum(balance) FROM accounts").Scan(&n)
		return n, err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("total:", total)
	// Output: total: 100
}

// Classify is a plain function: compose it with your own rules.
func ExampleClassify() {
	classify := func(err error) txn.Class {
		if c := txnsqlite.Classify(err); c != txn.ClassPermanent {
			return c
		}
		return txn.ClassPermanent // add application-specific rules here
	}
	fmt.Println(classify(nil))
	fmt.Println(txnsqlite.ClassifyCode(txnsqlite.CodeBusySnapshot))
	// Output:
	// permanent
	// retryable
}
