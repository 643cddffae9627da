// Command savepoint imports a batch of products in one transaction, skipping
// the rows the database rejects: each row is inserted inside txn.Savepoint,
// so a bad row undoes only itself and the rest of the batch commits
// together.
//
//	go run ./examples/savepoint
//
// It runs on an SQLite file in a temporary directory; the same code works
// with any backend that has savepoints (PostgreSQL, MySQL, MariaDB).
package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "savepoint:", err)
		os.Exit(1)
	}
}

// product is one row of the batch.
type product struct {
	SKU   string
	Name  string
	Price int64 // cents
}

// skipped is a row the database refused, and why.
type skipped struct {
	Row    product
	Reason error
}

// importBatch inserts rows in one transaction. A row that violates a
// constraint is skipped; a lost race (SQLITE_BUSY and the like) restarts
// the whole import, since the transaction is gone. It returns the number of
// rows imported and the rows skipped.
func importBatch(ctx context.Context, r *txn.Runner[*sql.Tx], rows []product) (int, []skipped, error) {
	var imported int
	var bad []skipped
	err := r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// fn may run more than once: start every attempt from scratch.
		imported, bad = 0, nil
		for _, p := range rows {
			err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO products (sku, name, price) VALUES (?, ?, ?)`, p.SKU, p.Name, p.Price)
				return err
			})
			switch {
			case err == nil:
				imported++
			case txnsqlite.Classify(err) == txn.ClassPermanent:
				// The savepoint was rolled back; the transaction goes on.
				bad = append(bad, skipped{Row: p, Reason: err})
			default:
				// Retryable: return it, and Run starts the batch again.
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return imported, bad, nil
}

func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "savepoint-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := txnsqlite.Open(filepath.Join(dir, "shop.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE products (
		sku   TEXT PRIMARY KEY,
		name  TEXT NOT NULL CHECK (name <> ''),
		price INTEGER NOT NULL CHECK (price > 0))`); err != nil {
		return err
	}

	batch := []product{
		{"A-100", "Teapot", 2500},
		{"A-101", "Mug", 900},
		{"A-100", "Teapot (again)", 2500}, // duplicate SKU
		{"A-102", "Saucer", -150},         // negative price
		{"A-103", "", 400},                // no name
		{"A-104", "Spoon", 300},
	}
	r := txnsqlite.New(db)
	imported, bad, err := importBatch(ctx, r, batch)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	fmt.Fprintf(out, "imported %d of %d rows in one transaction\n", imported, len(batch))
	for _, s := range bad {
		fmt.Fprintf(out, "skipped %s %q: %v\n", s.Row.SKU, s.Row.Name, s.Reason)
	}

	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM products`).Scan(&n); err != nil {
		return err
	}
	if n != imported {
		return fmt.Errorf("table holds %d rows, want %d", n, imported)
	}
	fmt.Fprintf(out, "products table: %d rows\n", n)
	return nil
}
