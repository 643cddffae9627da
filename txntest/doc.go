// Package txntest lets a test prove that a function given to txn's Run is
// safe to run again.
//
// In production every such function will one day run twice: after a
// serialization failure, a deadlock, a write conflict. The bugs that
// follow are invisible in tests, where nothing conflicts: a mail sent or a
// message published inside fn instead of in txn.OnCommit, a slice or
// counter captured from outside fn that grows on every attempt, a value
// read before Run (or in the first attempt) and reused by the retry. This
// package makes the application's real code path (the same Runner, the
// same fn, the same database) retry on demand:
//
//   - CheckRerun and CheckCall run a function once normally, then with
//     forced retries, and fail the test with the faulted attempts and both
//     reports when what the test's report function sees differs.
//   - Faults is a txn.Interceptor that fails chosen attempts at chosen
//     points (BEGIN, after fn and before COMMIT, COMMIT, or after a real
//     COMMIT whose reply is lost), by attempt number or at random from a
//     seed that is printed when the test fails and read back from
//     TXNTEST_SEED.
//   - Recorder is a txn.Observer that records attempts, retries and their
//     classes, commits and give-ups for assertions.
//
// Faults are installed with Runner.WithInterceptor on the Runner the
// application built (any backend: txnpgx, txnmysql, txnsqlite, txnmongo,
// txnsql) and apply to the outermost transaction, so nested Runs and
// Savepoints are undone with it. A fault before the commit is a retryable
// error for the core, whatever the backend: the transaction is rolled
// back on the server and fn runs again. A Runner without an interceptor
// pays one nil check per point of an attempt; nothing of this package is
// linked into a program that does not import it.
//
// # What the check cannot see
//
// CheckRerun compares what report returns, nothing else: an effect report
// does not show (a log line, a metric, a call to a service without a fake,
// a file) passes unseen, however often fn repeats it. A value reused from
// an earlier attempt, or read before Run, changes the outcome only when
// something else changed in between: without Meanwhile, such a fn passes.
// Effects fn leaves to goroutines that outlive it may not have happened yet
// when report runs. Faults are injected at the points given to At (before
// COMMIT by default), in the first attempts of each Run: code that misbehaves
// only on a later retry needs Retries, and code that misbehaves only when
// the COMMIT itself fails needs At(txn.InterceptCommit).
//
// The other way round, report must give the same value to every correct
// run: values the database does not roll back, such as ids drawn from a
// sequence or an AUTO_INCREMENT column, timestamps and random ids, differ
// from one run to the next, and a report that includes them fails the
// check for a correct fn. Leave them out (report the rows' contents), or
// have Reset restart them.
package txntest
