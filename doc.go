// Package txn runs a function inside a database transaction and runs it again,
// in a fresh transaction, when the database reports that the transaction lost
// a race: a serialization failure, a deadlock, a write conflict, a busy
// database.
//
// A Runner is built once over a database handle by a backend package
// (txnsql, txnpgx, txnmysql, txnmongo, txnsqlite) or an ORM adapter
// (txngorm, txnsqlx, txnbun, txnent) and shared by all goroutines:
//
//	r := txnpgx.New(pool)
//	err := r.Run(ctx, func(ctx context.Context, tx pgx.Tx) error {
//		_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amt, from)
//		return err
//	})
//
// Run begins a transaction, calls fn, and commits. When anything fails it
// rolls the transaction back first, then classifies the error: permanent
// errors are returned as they are; retryable ones (the database rolled the
// transaction back) make Run sleep for a jittered, capped exponential backoff
// and run fn again in a new transaction; commit-retryable ones (MongoDB's
// UnknownTransactionCommitResult) re-send only the commit; an ambiguous one
// (the connection died while COMMIT was in flight) is never retried unless the
// call is Idempotent, and is returned as an error matching ErrCommitUnknown.
//
// # Options
//
// Options are checked by the compiler. A RunnerOption configures a Runner
// (New and the backends' constructors take them), a CallOption one call
// (Run and Do take them), and an Option is both. Begin options (isolation
// level, read-only, ...) are typed by the transaction handle and built by the
// backend packages; Runner.WithBegin returns a Runner that uses them.
//
// # Nesting
//
// A Run nested in fn on the same Runner joins the outer transaction through a
// savepoint (or outright, on backends without savepoints); only the outermost
// Run retries. A nested Run accepts any CallOption and honours none of them:
// they all govern retries and admission, which belong to the outermost Run
// (an invalid one is still an error). Savepoint runs a function in a
// savepoint of the transaction carried by its context. OnCommit registers
// work to do once the outermost commit has succeeded, and TxFrom returns the
// transaction a context carries.
//
// Once a nested Run or Savepoint has seen a retryable error, nothing more of
// that attempt can commit: on backends with savepoints the whole transaction
// is rolled back at once, so what fn runs on it afterwards fails, later
// nested levels return the error without running, and a nested level whose
// fn swallowed it returns it in place of nil. A transaction that has
// ended is unreachable: a context kept past its Run (in an OnCommit callback,
// in a goroutine) carries no transaction, so TxFrom reports false, OnCommit
// and Savepoint return ErrNoTransaction, and Run on it starts a new outermost
// transaction. When fn commits or rolls back the transaction itself, Run
// returns an error matching ErrFnFinishedTx whatever fn returns, and never
// runs fn again.
//
// # Contention control
//
// Under contention, each Runner limits how many of its attempts run at once
// with an adaptive limit that shrinks when attempts conflict and opens again
// when they commit (on by default; see Adaptive). Its ceiling is the
// connection pool's size when the backend knows it (PoolSizer), and the
// retries of Runs that conflicted pass a narrower lane of their own, so a
// hot spot cannot take every connection. While it is contended, the
// attempts it admits beside others begin with their lock waits bounded
// when the backend can do so (LockWaitBounder; txnpgx), so that a deadlock
// PostgreSQL would find only after deadlock_timeout ends within a few
// attempt times. Calls can name conflict keys so
// that those touching the same rows take turns inside the process (Keys),
// and across processes with DatabaseKeys (KeyLocker). Neither the limit nor
// the keys can make the Runner wait on itself: while attempts wait and none
// of those admitted has been released for a stall interval (eight average
// attempt durations, at least two seconds), the first waiter is admitted over the
// limit or shares the key, so that a Run started inside fn with a fresh
// context cannot wait forever for the slot its caller holds. Observers
// (SlogObserver, and the txnotel module for
// OpenTelemetry) see every attempt, retry, give-up, commit and wait.
//
// # A database that is down
//
// A try that could not reach the database (BEGIN failed, so fn did not run)
// is retried only within the Runner's reconnect budget, on by default and
// refilled by the tries that did reach it (see ReconnectBudget): while the
// database is down each Run makes about one try and returns an error
// matching ErrUnavailable, instead of MaxAttempts tries each. Retries after
// fn ran are not limited by it. A GiveUpError counts both: Attempts, the
// runs of fn, and Unreachable, the tries that could not reach the database.
//
// # Files
//
// run.go holds the retry loop; backoff.go, budget.go and clock.go what it
// consults between attempts; context.go the transaction carried in the
// context; savepoint.go nesting; admission.go, adaptive.go and keys.go the
// contention control; observer.go the observers; intercept.go the fault
// hook of Runner.WithInterceptor (used by txntest); options.go and errors.go
// the options and errors.
package txn
