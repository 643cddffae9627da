package txnmysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
)

// A transfer between two accounts. If MySQL picks it as a deadlock victim
// (1213) or a row lock wait times out (1205), Run rolls the whole
// transaction back and runs the function again.
func ExampleNew() {
	db, err := sql.Open("mysql", "app:secret@tcp(127.0.0.1:3306)/bank")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	r := txnmysql.New(db, txn.MaxAttempts(5)) // build once, share
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - ? WHERE id = ?", 100, 1); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + ? WHERE id = ?", 100, 2)
		return err
	})
	var me *mysql.MySQLError
	switch {
	case errors.Is(err, txn.ErrCommitUnknown):
		// The connection died while COMMIT was in flight: check before
		// doing the transfer again.
		log.Print("transfer outcome unknown: ", err)
	case errors.As(err, &me):
		log.Printf("transfer failed with MySQL error %d: %v", me.Number, err)
	case err != nil:
		log.Print("transfer failed: ", err)
	}
}

// Opting into retries of NOWAIT failures, and composing the classifier with
// an error of the application's own.
func ExampleClassifier() {
	db, err := sql.Open("mysql", "app:secret@tcp(127.0.0.1:3306)/shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	errStale := errors.New("stale version")
	mysqlClass := txnmysql.Classifier(txnmysql.ClassifyOptions{LockWaitNowait: true})
	r := txnmysql.New(db, txn.WithClassifier(func(err error) txn.Class {
		if errors.Is(err, errStale) {
			return txn.ClassRetryable
		}
		return mysqlClass(err)
	}))

	err = r.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		var stock int
		// Fails at once with 3572 (MySQL) or 1205 (MariaDB) if another
		// transaction holds the row; Run retries after a backoff.
		if err := tx.QueryRowContext(ctx, "SELECT stock FROM items WHERE id = ? FOR UPDATE NOWAIT", 7).Scan(&stock); err != nil {
			return err
		}
		if stock == 0 {
			return txn.Permanent(errors.New("sold out"))
		}
		_, err := tx.ExecContext(ctx, "UPDATE items SET stock = stock - 1 WHERE id = ?", 7)
		return err
	})
	if err != nil {
		log.Print(err)
	}
}

// Isolation level and read-only flag, for every transaction of a Runner or
// of a view of it made by WithBegin, which shares the Runner's limits and
// contention control. txn.Do returns a value from the attempt that
// committed.
func ExampleTxOptions() {
	db, err := sql.Open("mysql", "app:secret@tcp(127.0.0.1:3306)/bank")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	r := txnmysql.New(db).WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelReadCommitted}))
	reports := r.WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}))

	total, err := txn.Do(context.Background(), reports, func(ctx context.Context, tx *sql.Tx) (int64, error) {
		var sum int64
		err := tx.QueryRowContext(ctx, "SELECT SUM(balance) FROM accounts").Scan(&sum)
		return sum, err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("total:", total)
}

// A savepoint undoes part of a transaction that then commits; a Run nested
// in fn on the same Runner does the same. OnCommit callbacks registered in
// the undone part never run.
func Example_savepoint() {
	db, err := sql.Open("mysql", "app:secret@tcp(127.0.0.1:3306)/shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	r := txnmysql.New(db)

	errNoCoupon := errors.New("coupon not applicable")
	err = r.Run(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, ?)", 42, 9900); err != nil {
			return err
		}
		// Try the coupon; if it does not apply, keep the order without it.
		err := txn.Savepoint(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "UPDATE orders SET total = total - 1000 WHERE id = ?", 42); err != nil {
				return err
			}
			_ = txn.OnCommit(ctx, func() { log.Print("coupon used") })
			return errNoCoupon // rolled back to the savepoint
		})
		if err != nil && !errors.Is(err, errNoCoupon) {
			return err // a deadlock, say: the whole transaction is retried
		}
		// A nested Run on the same Runner is a savepoint too.
		return r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO order_log (order_id, event) VALUES (?, 'created')", 42)
			return err
		})
	})
	if err != nil {
		log.Print(err)
	}
}

// Classify is a plain function: wrap it, or call it on errors of your own
// code paths.
func ExampleClassify() {
	fmt.Println(txnmysql.Classify(&mysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"}))
	fmt.Println(txnmysql.Classify(fmt.Errorf("debit: %w", &mysql.MySQLError{Number: 1205})))
	fmt.Println(txnmysql.Classify(&mysql.MySQLError{Number: 1062, Message: "Duplicate entry"}))
	fmt.Println(txnmysql.Classify(mysql.ErrInvalidConn))
	// Output:
	// retryable
	// retryable
	// permanent
	// connection-lost
}

// Replicas of a service serialize transfers on the same accounts through
// MySQL/MariaDB named locks (GET_LOCK), held by each attempt on its own
// connection from before BEGIN until after COMMIT or ROLLBACK.
func Example_databaseKeys() {
	db, err := sql.Open("mysql", "app:secret@tcp(127.0.0.1:3306)/bank")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(20) // the Runner's limit follows the pool

	r := txnmysql.New(db, txn.DatabaseKeys())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	from, to := int64(1), int64(2)
	err = r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - ? WHERE id = ?", 100, from); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + ? WHERE id = ?", 100, to)
		return err
	}, txn.Keys(fmt.Sprint("account:", from), fmt.Sprint("account:", to)))
	if err != nil {
		log.Print("transfer failed: ", err)
	}
}
