// Command oncommit places orders and publishes an "order placed" event for
// each, with txn.OnCommit: the event goes out only after the transaction
// has committed, exactly once, however many attempts the transaction took,
// and never for an order that was rolled back.
//
//	go run ./examples/oncommit
//
// It runs on an SQLite file in a temporary directory.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "oncommit:", err)
		os.Exit(1)
	}
}

// ErrOutOfStock rejects an order for more than the stock.
var ErrOutOfStock = errors.New("out of stock")

// event is what the shop tells the rest of the world.
type event struct {
	OrderID  int64
	Customer string
	Qty      int
}

// broker stands for a message broker: Publish must not be called for an
// order that did not commit, since consumers cannot take a message back.
type broker struct {
	mu        sync.Mutex
	published []event
}

// Publish sends e to the consumers.
func (b *broker) Publish(e event) {
	b.mu.Lock()
	b.published = append(b.published, e)
	b.mu.Unlock()
}

// flakyPayments is a payment service whose first call times out, as real
// ones sometimes do.
type flakyPayments struct{ calls int }

// errPaymentTimeout is a transient failure: worth retrying the transaction.
var errPaymentTimeout = errors.New("payment service timed out")

// Authorize asks the payment service to approve the order; the first call
// fails with errPaymentTimeout.
func (p *flakyPayments) Authorize(customer string, qty int) error {
	p.calls++
	if p.calls == 1 {
		return errPaymentTimeout
	}
	return nil
}

// shop places orders.
type shop struct {
	r        *txn.Runner[*sql.Tx]
	broker   *broker
	payments *flakyPayments
	log      io.Writer
}

// PlaceOrder reserves qty widgets for customer, records the order and, once
// the transaction has committed, publishes the event. It returns the order
// id.
func (s *shop) PlaceOrder(ctx context.Context, customer string, qty int) (int64, error) {
	attempt := 0
	return txn.Do(ctx, s.r, func(ctx context.Context, tx *sql.Tx) (int64, error) {
		attempt++
		res, err := tx.ExecContext(ctx, `UPDATE stock SET qty = qty - ? WHERE item = 'widget' AND qty >= ?`, qty, qty)
		if err != nil {
			return 0, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, err
		} else if n == 0 {
			return 0, txn.Permanent(ErrOutOfStock)
		}
		res, err = tx.ExecContext(ctx, `INSERT INTO orders (customer, qty) VALUES (?, ?)`, customer, qty)
		if err != nil {
			return 0, err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return 0, err
		}
		// Registered now, run only if this attempt commits.
		if err := txn.OnCommit(ctx, func() { s.broker.Publish(event{OrderID: id, Customer: customer, Qty: qty}) }); err != nil {
			return 0, err
		}
		if err := s.payments.Authorize(customer, qty); err != nil {
			fmt.Fprintf(s.log, "  %s: attempt %d failed (%v); rolled back, its event dropped\n", customer, attempt, err)
			return 0, txn.Retry(err)
		}
		return id, nil
	})
}

func run(ctx context.Context, out io.Writer) error {
	dir, err := os.MkdirTemp("", "oncommit-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := txnsqlite.Open(filepath.Join(dir, "shop.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `
		CREATE TABLE stock (item TEXT PRIMARY KEY, qty INTEGER NOT NULL);
		INSERT INTO stock VALUES ('widget', 5);
		CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, qty INTEGER NOT NULL)`); err != nil {
		return err
	}

	b := &broker{}
	s := &shop{r: txnsqlite.New(db), broker: b, payments: &flakyPayments{}, log: out}
	for _, o := range []struct {
		customer string
		qty      int
	}{{"alice", 3}, {"bob", 4}, {"carol", 2}} {
		fmt.Fprintf(out, "order: %s wants %d widgets\n", o.customer, o.qty)
		id, err := s.PlaceOrder(ctx, o.customer, o.qty)
		switch {
		case errors.Is(err, ErrOutOfStock):
			fmt.Fprintf(out, "  %s: rejected: %v (rolled back, no event)\n", o.customer, err)
		case err != nil:
			return err
		default:
			fmt.Fprintf(out, "  %s: committed as order %d\n", o.customer, id)
		}
	}

	fmt.Fprintln(out, "events published:")
	for _, e := range b.published {
		fmt.Fprintf(out, "  order %d placed: %s, %d widgets\n", e.OrderID, e.Customer, e.Qty)
	}
	var orders int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM orders`).Scan(&orders); err != nil {
		return err
	}
	if orders != len(b.published) {
		return fmt.Errorf("%d orders committed but %d events published", orders, len(b.published))
	}
	return nil
}
