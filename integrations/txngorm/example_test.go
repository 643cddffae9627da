package txngorm_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/integrations/txngorm"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Account is the model of the examples.
type Account struct {
	ID      int
	Balance int
}

// A transfer on SQLite through the pure-Go dialector github.com/glebarez/sqlite.
// fn receives the *gorm.DB bound to the transaction; when SQLite reports
// SQLITE_BUSY, Run rolls back and runs fn again in a new transaction. The
// OnCommit callback runs once, after the commit.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "txngorm-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dsn := filepath.Join(dir, "bank.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{
		SkipDefaultTransaction: true, // writes outside Run need no transaction of their own
		Logger:                 logger.Discard,
	})
	if err != nil {
		log.Fatal(err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	if err := db.AutoMigrate(&Account{}); err != nil {
		log.Fatal(err)
	}
	db.Create([]Account{{ID: 1, Balance: 100}, {ID: 2, Balance: 0}})

	r := txngorm.New(db, txn.MaxAttempts(10)) // build once, share
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
		if err := tx.Model(&Account{}).Where("id = ?", 1).Update("balance", gorm.Expr("balance - ?", 30)).Error; err != nil {
			return err
		}
		if err := tx.Model(&Account{}).Where("id = ?", 2).Update("balance", gorm.Expr("balance + ?", 30)).Error; err != nil {
			return err
		}
		return txn.OnCommit(ctx, func() { fmt.Println("transferred 30") })
	})
	if err != nil {
		log.Fatal(err)
	}
	var accounts []Account
	db.Order("id").Find(&accounts)
	fmt.Println(accounts)
	// Output:
	// transferred 30
	// [{1 70} {2 30}]
}

// On PostgreSQL, give the Runner txnpgx's classifier: serialization
// failures and deadlocks are retried, a connection lost during COMMIT is
// reported as an unknown outcome, and the driver's error stays reachable
// with errors.As.
func ExampleNew_classifier() {
	db, err := gorm.Open(postgres.Open("postgres://app@127.0.0.1/bank"), &gorm.Config{
		SkipDefaultTransaction: true,
		TranslateError:         true, // constraint violations become gorm.ErrDuplicatedKey, ...; conflicts stay the driver's errors
	})
	if err != nil {
		log.Fatal(err)
	}
	r := txngorm.New(db, txn.WithClassifier(txnpgx.Classify), txn.MaxAttempts(5))
	ctx := context.Background()
	err = r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
		var a Account
		if err := tx.First(&a, 1).Error; err != nil {
			return err
		}
		// A nested Run is a savepoint: a permanent error inside it undoes
		// only its own work.
		err := r.Run(ctx, func(ctx context.Context, tx *gorm.DB) error {
			return tx.Create(&Account{ID: 3, Balance: a.Balance}).Error
		})
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			err = nil // already there; the outer work goes on
		}
		return err
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, txn.ErrCommitUnknown):
		log.Print("outcome unknown: check before doing it again: ", err)
	case errors.As(err, &pgErr):
		log.Printf("failed with SQLSTATE %s: %v", pgErr.Code, err)
	case err != nil:
		log.Print(err)
	}
}
