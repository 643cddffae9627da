package txnbun_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnbun"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/pgdriver"
)

// Account is the model of the examples.
type Account struct {
	bun.BaseModel `bun:"table:example_accounts"`
	ID            int64 `bun:"id,pk"`
	Balance       int64 `bun:"balance,notnull"`
}

// A transfer on PostgreSQL through bun's pgdialect over pgx's database/sql
// driver, under REPEATABLE READ: serialization failures and deadlocks make
// Run roll back and run fn again in a new transaction.
func Example() {
	sqldb, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	db := bun.NewDB(sqldb, pgdialect.New())
	defer db.Close()

	// Build the Runner once and share it. The classifier comes from the
	// backend package of the driver under db.
	r := txnbun.New(db, txn.WithClassifier(txnpgx.Classify), txn.MaxAttempts(10)).
		WithBegin(txnbun.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead}))
	ctx := context.Background()
	err = r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model((*Account)(nil)).Set("balance = balance - ?", 100).Where("id = ?", 1).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*Account)(nil)).Set("balance = balance + ?", 100).Where("id = ?", 2).Exec(ctx)
		return err
	})
	if errors.Is(err, txn.ErrCommitUnknown) {
		log.Print("the connection died during COMMIT: the transfer may or may not have happened")
	} else if err != nil {
		log.Fatal(err)
	}
}

// With bun's own PostgreSQL driver, pgdriver, server errors are
// pgdriver.Error values, which txnpgx.Classify (written for pgx) does not
// read: a classifier of five lines hands their SQLSTATE over.
func Example_pgdriver() {
	classify := func(err error) txn.Class {
		var pe pgdriver.Error
		if errors.As(err, &pe) {
			return txnpgx.Classify(&pgconn.PgError{Code: pe.Field('C'), Message: pe.Field('M')})
		}
		return txnpgx.Classify(err)
	}
	sqldb := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(os.Getenv("DATABASE_URL"))))
	db := bun.NewDB(sqldb, pgdialect.New())
	defer db.Close()

	r := txnbun.New(db, txn.WithClassifier(classify)).
		WithBegin(txnbun.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))
	ctx := context.Background()
	n, err := txn.Do(ctx, r, func(ctx context.Context, tx bun.Tx) (int, error) {
		n, err := tx.NewSelect().Model((*Account)(nil)).Where("balance < 0").Count(ctx)
		return int(n), err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("overdrawn accounts:", n)
}

// A nested Run is a savepoint: a permanent error inside it undoes only its
// own work (and drops its OnCommit callbacks), and the outer transaction
// goes on. This example runs on SQLite (modernc.org/sqlite, no cgo).
func Example_nested() {
	dir, err := os.MkdirTemp("", "txnbun")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sqldb, err := txnsqlite.Open(filepath.Join(dir, "bank.db"))
	if err != nil {
		log.Fatal(err)
	}
	db := bun.NewDB(sqldb, sqlitedialect.New())
	defer db.Close()
	ctx := context.Background()
	if _, err := db.NewCreateTable().Model((*Account)(nil)).Exec(ctx); err != nil {
		log.Fatal(err)
	}

	r := txnbun.New(db, txn.WithClassifier(txnsqlite.Classify))
	errLimit := errors.New("over the limit")
	err = r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(&Account{ID: 1, Balance: 100}).Exec(ctx); err != nil {
			return err
		}
		err := r.Run(ctx, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewInsert().Model(&Account{ID: 2, Balance: 1_000_000}).Exec(ctx); err != nil {
				return err
			}
			_ = txn.OnCommit(ctx, func() { fmt.Println("never printed") })
			return errLimit // undoes account 2 only
		})
		fmt.Println("nested:", err)
		return txn.OnCommit(ctx, func() { fmt.Println("committed") })
	})
	if err != nil {
		log.Fatal(err)
	}
	n, err := db.NewSelect().Model((*Account)(nil)).Count(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("accounts:", n)
	// Output:
	// nested: over the limit
	// committed
	// accounts: 1
}
