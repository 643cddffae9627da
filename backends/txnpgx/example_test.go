package txnpgx_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnpgx"
)

// connect opens the pool the examples use, from DATABASE_URL.
func connect(ctx context.Context) *pgxpool.Pool {
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	return pool
}

// A transfer between two accounts under SERIALIZABLE, retried on
// serialization failures and deadlocks.
func Example() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()

	// Build the Runner once and share it.
	r := txnpgx.New(pool, txn.MaxAttempts(10)).
		WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}))
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", 100, 1); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", 100, 2)
		return err
	})
	if errors.Is(err, txn.ErrCommitUnknown) {
		// The connection died while COMMIT was in flight: check before
		// doing it again.
		log.Print("transfer may or may not have happened")
	} else if err != nil {
		log.Fatal(err)
	}
}

// A view of the Runner with other transaction options, sharing the
// Runner's limits and contention control: here a read-only snapshot for a
// report, on a Runner whose default is read-write.
func ExampleTxOptions() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	r := txnpgx.New(pool)
	reports := r.WithBegin(txnpgx.TxOptions(pgx.TxOptions{
		IsoLevel:       pgx.Serializable,
		AccessMode:     pgx.ReadOnly,
		DeferrableMode: pgx.Deferrable, // never fails with 40001, may wait at start
	}))

	total, err := txn.Do(ctx, reports, func(ctx context.Context, tx pgx.Tx) (int64, error) {
		var total int64
		err := tx.QueryRow(ctx, "SELECT sum(balance) FROM accounts").Scan(&total)
		return total, err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("total:", total)
}

// Retrying lock-wait failures is a policy choice: turn it on for a Runner
// whose transactions use NOWAIT or lock_timeout.
func ExampleClassifier() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()

	r := txnpgx.New(pool,
		txn.WithClassifier(txnpgx.Classifier(txnpgx.ClassifyOptions{LockNotAvailable: true})),
		txn.MaxElapsed(2*time.Second),
	)
	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, "SELECT id FROM jobs WHERE state = 'ready' LIMIT 1 FOR UPDATE NOWAIT").Scan(&id)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE jobs SET state = 'running' WHERE id = $1", id)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Classify can be wrapped: here a unique violation on one constraint is
// treated as a lost race (another request picked the same key) and retried.
func ExampleClassify() {
	classify := func(err error) txn.Class {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "orders_number_key" {
			return txn.ClassRetryable
		}
		return txnpgx.Classify(err)
	}
	fmt.Println(classify(&pgconn.PgError{Code: "40001"}))
	fmt.Println(classify(&pgconn.PgError{Code: "23505", ConstraintName: "orders_number_key"}))
	fmt.Println(classify(&pgconn.PgError{Code: "23505", ConstraintName: "users_email_key"}))
	fmt.Println(classify(&pgconn.PgError{Code: "40003"}))
	// Output:
	// retryable
	// retryable
	// permanent
	// ambiguous
}

// Savepoints and OnCommit: the audit row is optional, the outbox event is
// published only once the order is committed.
func Example_savepoint() {
	ctx := context.Background()
	pool := connect(ctx)
	defer pool.Close()
	r := txnpgx.New(pool)

	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id) VALUES ($1)", 42); err != nil {
			return err
		}
		// A failure in here undoes only the savepoint's work.
		if err := txn.Savepoint(ctx, func(ctx context.Context, sp pgx.Tx) error {
			_, err := sp.Exec(ctx, "INSERT INTO audit (order_id) VALUES ($1)", 42)
			return err
		}); err != nil {
			log.Printf("audit skipped: %v", err)
		}
		return txn.OnCommit(ctx, func() { fmt.Println("order 42 committed") })
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Replicas of a service serialize transfers on the same accounts through
// PostgreSQL advisory locks, so that a hot account is updated by one
// transaction at a time across every process, without conflicts and
// without a coordinator of their own. The Runner's limit is sized to the
// pool (here 20 connections) on its own.
func Example_databaseKeys() {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	r := txnpgx.New(pool, txn.DatabaseKeys()).
		WithBegin(txnpgx.TxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}))
	from, to := int64(1), int64(2)
	err = r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", 100, from); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", 100, to)
		return err
	}, txn.Keys(fmt.Sprint("account:", from), fmt.Sprint("account:", to)))
	if err != nil {
		log.Print("transfer failed: ", err)
	}
}
