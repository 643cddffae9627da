// Command bank moves money between accounts from several goroutines at
// once, each transfer in a transaction that txn retries when the database
// reports a lost race. It runs on an SQLite file in a temporary directory by
// default, or on PostgreSQL or MySQL/MariaDB:
//
//	go run ./examples/bank
//	go run ./examples/bank --backend postgres --dsn postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	go run ./examples/bank --backend mysql --dsn 'root@tcp(127.0.0.1:3306)/test'
//
//	go run ./examples/bank --backend mongodb --dsn 'mongodb://127.0.0.1:27017/?replicaSet=rs0'
//
// The three SQL databases go through database/sql, so their transfer code is
// written once (sqlBank); only the Runner's constructor differs
// (txnsqlite.New, txnmysql.New, and txnsql.New with txn.WithClassifier(txnpgx.Classify) for
// pgx's database/sql driver). MongoDB has its own (mongoBank, in mongo.go).
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmysql"
	"github.com/txnkit/txn/backends/txnpgx"
	"github.com/txnkit/txn/backends/txnsql"
	"github.com/txnkit/txn/backends/txnsqlite"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bank:", err)
		os.Exit(1)
	}
}

// ErrInsufficientFunds is returned by a transfer whose source account holds
// less than the amount. It is a business rule, not a lost race: txn.Permanent
// makes sure it is never retried.
var ErrInsufficientFunds = errors.New("insufficient funds")

// bank is what the example needs of a database.
type bank interface {
	// Setup drops and creates the accounts, each holding 1000.
	Setup(ctx context.Context, accounts int) error
	// Transfer moves amount from account from to account to.
	Transfer(ctx context.Context, from, to, amount int64) error
	// Total returns the sum of all balances.
	Total(ctx context.Context) (int64, error)
}

// sqlBank is the bank of the SQL databases: a Runner and the statements of
// one dialect.
type sqlBank struct {
	db       *sql.DB
	r        *txn.Runner[*sql.Tx]
	table    string
	dollarPH bool // PostgreSQL numbers its placeholders: $1, $2, ...
}

// q adapts a statement written with ? placeholders and %s for the table
// name to the database.
func (b *sqlBank) q(stmt string) string {
	stmt = fmt.Sprintf(stmt, b.table)
	if !b.dollarPH {
		return stmt
	}
	var sb strings.Builder
	n := 0
	for _, c := range stmt {
		if c == '?' {
			n++
			fmt.Fprintf(&sb, "$%d", n)
			continue
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// Transfer moves amount from account from to account to. It is the part to
// copy: everything inside fn may run more than once, each time in a fresh
// transaction, so it only talks to the database through tx and keeps no
// state outside it.
func (b *sqlBank) Transfer(ctx context.Context, from, to, amount int64) error {
	return b.r.Run(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var balance int64
		if err := tx.QueryRowContext(ctx, b.q(`SELECT balance FROM %s WHERE id = ?`), from).Scan(&balance); err != nil {
			return fmt.Errorf("read account %d: %w", from, err)
		}
		if balance < amount {
			return txn.Permanent(fmt.Errorf("account %d: %w", from, ErrInsufficientFunds))
		}
		if _, err := tx.ExecContext(ctx, b.q(`UPDATE %s SET balance = balance - ? WHERE id = ?`), amount, from); err != nil {
			return fmt.Errorf("debit account %d: %w", from, err)
		}
		if _, err := tx.ExecContext(ctx, b.q(`UPDATE %s SET balance = balance + ? WHERE id = ?`), amount, to); err != nil {
			return fmt.Errorf("credit account %d: %w", to, err)
		}
		return nil
	})
}

// Total returns the sum of all balances, in a transaction of its own.
func (b *sqlBank) Total(ctx context.Context) (int64, error) {
	return txn.Do(ctx, b.r, func(ctx context.Context, tx *sql.Tx) (int64, error) {
		var total int64
		err := tx.QueryRowContext(ctx, b.q(`SELECT COALESCE(SUM(balance), 0) FROM %s`)).Scan(&total)
		return total, err
	})
}

// retryCounter is a txn.Observer that counts retries.
type retryCounter struct {
	txn.NopObserver
	n atomic.Int64
}

// RetryScheduled counts one retry.
func (c *retryCounter) RetryScheduled(context.Context, txn.RetryEvent) { c.n.Add(1) }

// config is the command line.
type config struct {
	backend, dsn, table         string
	accounts, workers, transfer int
}

func parse(args []string) (config, error) {
	var o config
	fs := flag.NewFlagSet("bank", flag.ContinueOnError)
	fs.StringVar(&o.backend, "backend", "sqlite", "sqlite, postgres, mysql or mongodb")
	fs.StringVar(&o.dsn, "dsn", "", "data source name (default: a temporary SQLite file, or the local test server)")
	fs.StringVar(&o.table, "table", "txn_example_accounts", "name of the accounts table or collection (dropped and created)")
	fs.IntVar(&o.accounts, "accounts", 5, "number of accounts")
	fs.IntVar(&o.workers, "workers", 8, "goroutines making transfers at once")
	fs.IntVar(&o.transfer, "transfers", 50, "transfers per goroutine")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.accounts < 2:
		return o, fmt.Errorf("--accounts %d: need at least 2", o.accounts)
	case o.workers < 1 || o.transfer < 1:
		return o, errors.New("--workers and --transfers must be at least 1")
	}
	for _, c := range o.table {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return o, fmt.Errorf("--table %q: use lower-case letters, digits and _", o.table)
		}
	}
	return o, nil
}

// open connects to the database and builds the Runner for it. The returned
// function closes the database and removes a temporary SQLite directory.
func open(o config, retries txn.Observer) (bank, func(), error) {
	opts := []txn.RunnerOption{txn.MaxAttempts(20), txn.WithObserver(retries)}
	if o.backend == "mongodb" {
		return openMongo(o, opts)
	}
	b := &sqlBank{table: o.table}
	cleanup := func() {}
	var err error
	switch o.backend {
	case "sqlite":
		path := o.dsn
		if path == "" {
			dir, err := os.MkdirTemp("", "bank-example-")
			if err != nil {
				return nil, nil, err
			}
			cleanup = func() { _ = os.RemoveAll(dir) }
			path = filepath.Join(dir, "bank.db")
		}
		// WAL, busy_timeout and BEGIN IMMEDIATE: see txnsqlite's README.
		b.db, err = txnsqlite.Open(path)
		if err == nil {
			b.r = txnsqlite.New(b.db, opts...)
		}
	case "postgres":
		b.db, err = sql.Open("pgx", orDefault(o.dsn, "TXN_PG_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
		b.dollarPH = true
		// Serializable: concurrent transfers on the same account fail with
		// 40001, which txnpgx.Classify marks retryable.
		opts = append(opts, txn.WithClassifier(txnpgx.Classify))
		b.r = txnsql.New(b.db, opts...).WithBegin(txnsql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))
	case "mysql":
		b.db, err = sql.Open("mysql", orDefault(o.dsn, "TXN_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"))
		// Serializable: the balance read takes a shared lock, and two
		// transfers upgrading theirs deadlock (1213), which txnmysql retries.
		b.r = txnmysql.New(b.db, opts...).WithBegin(txnmysql.TxOptions(sql.TxOptions{Isolation: sql.LevelSerializable}))
	default:
		err = fmt.Errorf("--backend %q: want sqlite, postgres, mysql or mongodb", o.backend)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return b, func() { _ = b.db.Close(); cleanup() }, nil
}

func orDefault(v, env, def string) string {
	if v != "" {
		return v
	}
	if e := os.Getenv(env); e != "" {
		return e
	}
	return def
}

// Setup drops and creates the accounts table, every account holding 1000.
func (b *sqlBank) Setup(ctx context.Context, accounts int) error {
	if _, err := b.db.ExecContext(ctx, b.q(`DROP TABLE IF EXISTS %s`)); err != nil {
		return err
	}
	if _, err := b.db.ExecContext(ctx, b.q(`CREATE TABLE %s (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)`)); err != nil {
		return err
	}
	for id := 1; id <= accounts; id++ {
		if _, err := b.db.ExecContext(ctx, b.q(`INSERT INTO %s (id, balance) VALUES (?, 1000)`), id); err != nil {
			return err
		}
	}
	return nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	retries := &retryCounter{}
	b, closeDB, err := open(o, retries)
	if err != nil {
		return err
	}
	defer closeDB()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := b.Setup(ctx, o.accounts); err != nil {
		return fmt.Errorf("setup: %w", err)
	}

	var committed, refused atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.workers)
	start := time.Now()
	for w := range o.workers {
		wg.Add(1)
		go func(rng *rand.Rand) {
			defer wg.Done()
			for range o.transfer {
				from := rng.Int64N(int64(o.accounts)) + 1
				to := from%int64(o.accounts) + 1 // the next account, so that transfers collide
				err := b.Transfer(ctx, from, to, rng.Int64N(50)+1)
				switch {
				case err == nil:
					committed.Add(1)
				case errors.Is(err, ErrInsufficientFunds):
					refused.Add(1)
				default:
					errs <- err
					return
				}
			}
		}(rand.New(rand.NewPCG(uint64(w), 42)))
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	total, err := b.Total(ctx)
	if err != nil {
		return fmt.Errorf("total: %w", err)
	}
	fmt.Fprintf(out, "%s: %d transfers committed, %d refused (insufficient funds), %d retries, in %v\n",
		o.backend, committed.Load(), refused.Load(), retries.n.Load(), time.Since(start).Round(time.Millisecond))
	want := int64(o.accounts) * 1000
	if total != want {
		return fmt.Errorf("money was created or lost: total %d, want %d", total, want)
	}
	fmt.Fprintf(out, "total balance %d: no money created or lost\n", total)
	return nil
}
