package txnent_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsqlite"
	"github.com/txnkit/txn/integrations/txnent"
	"github.com/txnkit/txn/integrations/txnent/internal/ent"
)

// A transfer on PostgreSQL (pgx's database/sql driver) under REPEATABLE
// READ, written with the generated client. ent.Client.BindDriver is the
// glue added to the generated package (see the README).
func Example() {
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	drv := entsql.OpenDB(dialect.Postgres, db)
	client := ent.NewClient(ent.Driver(drv))
	defer client.Close()

	// Build the Runner once, over the client's driver, and share it.
	r := txnent.New(drv, txn.WithClassifier(txnpgx.Classify), txn.MaxAttempts(10)).
		WithBegin(txnent.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead}))
	ctx := context.Background()
	err = r.Run(ctx, txnent.WithClient(client.BindDriver, func(ctx context.Context, c *ent.Client) error {
		if err := c.Account.UpdateOneID(1).AddBalance(-100).Exec(ctx); err != nil {
			return err
		}
		return c.Account.UpdateOneID(2).AddBalance(100).Exec(ctx)
	}))
	if errors.Is(err, txn.ErrCommitUnknown) {
		log.Print("the connection died during COMMIT: the transfer may or may not have happened")
	} else if err != nil {
		log.Fatal(err)
	}
}

// A nested Run is a savepoint (ent's driver has none, so txnent issues
// SAVEPOINT statements): a permanent error inside it undoes only its own
// work and drops its OnCommit callbacks. This example runs on SQLite
// (modernc.org/sqlite, no cgo), and uses txn.Do to return a value.
func Example_nested() {
	dir, err := os.MkdirTemp("", "txnent")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := txnsqlite.Open(filepath.Join(dir, "bank.db"))
	if err != nil {
		log.Fatal(err)
	}
	drv := entsql.OpenDB(dialect.SQLite, db)
	client := ent.NewClient(ent.Driver(drv))
	defer client.Close()
	ctx := context.Background()
	if err := client.Schema.Create(ctx); err != nil {
		log.Fatal(err)
	}

	r := txnent.New(drv, txn.WithClassifier(txnsqlite.Classify))
	errLimit := errors.New("over the limit")
	id, err := txn.Do(ctx, r, func(ctx context.Context, tx *txnent.Tx) (int, error) {
		c := client.BindDriver(tx)
		a, err := c.Account.Create().SetBalance(100).Save(ctx)
		if err != nil {
			return 0, err
		}
		err = r.Run(ctx, txnent.WithClient(client.BindDriver, func(ctx context.Context, c *ent.Client) error {
			if err := c.Account.UpdateOneID(a.ID).AddBalance(1_000_000).Exec(ctx); err != nil {
				return err
			}
			_ = txn.OnCommit(ctx, func() { fmt.Println("never printed") })
			return errLimit // undoes the bonus only
		}))
		fmt.Println("nested:", err)
		return a.ID, txn.OnCommit(ctx, func() { fmt.Println("committed") })
	})
	if err != nil {
		log.Fatal(err)
	}
	a, err := client.Account.Get(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("balance:", a.Balance)
	// Output:
	// nested: over the limit
	// committed
	// balance: 100
}
