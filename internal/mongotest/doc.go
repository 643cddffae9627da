// Package mongotest is a MongoDB wire-protocol server for tests of the
// txnmongo backend through the real Go driver, on machines where no MongoDB
// server can run.
//
// The server listens on the loopback interface and presents itself as the
// primary of a one-member replica set, so the driver allows sessions and
// transactions. It speaks OP_MSG (document sequences included) and answers
// the driver's legacy OP_QUERY handshake. It keeps documents in memory and
// runs multi-document transactions with snapshot isolation and per-document
// write locks: the second writer of a document gets a genuine WriteConflict
// (112) labelled TransientTransactionError and its transaction is aborted,
// as in MongoDB. Faults are scripted like MongoDB's failCommand fail point,
// through SetFailPoint or the configureFailPoint command, so the same test
// can run against a real replica set started with enableTestCommands. Every
// command is logged for assertions (Commands), and committed state can be
// read directly (Doc, Docs).
//
// Supported commands: hello, isMaster, ping, buildInfo, endSessions,
// killSessions, configureFailPoint, commitTransaction, abortTransaction,
// insert, find, update, delete, findAndModify, count, aggregate ($match,
// $sort, $skip, $limit, $project, $count, $group with $sum), create, drop,
// dropDatabase, listCollections and killCursors. Queries support equality
// and the operators $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists,
// $not, $and, $or and $nor; updates support replacement and $set, $unset,
// $inc, $mul, $min, $max, $setOnInsert, $currentDate and $push. Every
// other command fails with CommandNotFound (59). Results always fit the
// first batch.
//
// # Where it behaves like mongod
//
// These behaviours are relied on by txnmongo's tests and follow mongod:
// failCommand is evaluated before the session is checked out, so an
// injected error leaves the transaction untouched (see FailPoint); a
// command that fails for real inside a transaction (a WriteConflict, a
// DuplicateKey, a command not allowed in a transaction) aborts it, and the
// transaction's commit then fails with NoSuchTransaction (251) labelled
// TransientTransactionError; a repeated commitTransaction of a committed
// transaction succeeds again; a newer txnNumber on a session aborts the
// transaction the session had open; a transaction older than its lifetime
// (WithTransactionLifetime) is aborted; a retryable write re-sent with the
// same txnNumber gets its first reply.
//
// # Known differences from mongod
//
// No test leans on these; a test that needs one of them must first make
// mongotest match mongod.
//
//   - Collections: a collection created implicitly inside a transaction
//     (by its first insert or upsert) is created at once, outside the
//     transaction, and survives an abort. mongod (4.4 and later) creates it
//     as part of the transaction and may answer a concurrent catalog
//     change with a transient error (for example a WriteConflict or
//     LockTimeout labelled TransientTransactionError).
//   - Indexes: only _id is unique. There are no secondary indexes, so no
//     DuplicateKey from a unique secondary index and no index build
//     conflicts; createIndexes is not supported.
//   - Read and write concern are accepted and ignored: every write is
//     acknowledged as if by a majority at once, a read concern never waits,
//     and a write concern error exists only when a fail point adds one.
//     Transactions always read a snapshot taken at their first statement,
//     whatever the read concern.
//   - Error labels: the server attaches TransientTransactionError (inside
//     transactions) and RetryableWriteError (retryable codes on retryable
//     writes, commitTransaction and abortTransaction) and nothing else by
//     itself. mongod also sends NoWritesPerformed, SystemOverloadedError
//     and RetryableError (overload back-pressure), and the snapshot errors
//     (SnapshotTooOld, SnapshotUnavailable, StaleChunkVersion) that exist
//     only with real storage and sharding. A fail point can inject any of
//     them with explicit labels.
//   - Replication: one member, always primary. No elections, no stepdown,
//     no rollback of writes that were not majority committed, no
//     secondaries to read from, no sharding (mongos, pinning, recovery
//     tokens).
//   - Fail point: closeConnectionAfterApply (run the command, then drop the
//     connection without a reply) has no mongod counterpart; only failCommand
//     is supported, with modes alwaysOn, times, skip and off.
//   - Limits: transactionLifetimeLimitSeconds is an option, not a server
//     parameter; there is no 16 MB document check, no cache pressure (388
//     TransactionTooLargeForCache comes only from a fail point) and no
//     maxTimeMS enforcement other than for waits on a locked document.
//   - Cursors: every result fits the first batch; getMore fails with
//     CursorNotFound.
package mongotest
