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
// insert, find, update, delete, findAndModify, count, distinct, aggregate,
// create, drop, dropDatabase, listCollections, createIndexes, listIndexes,
// dropIndexes and killCursors. Every other command fails with
// CommandNotFound (59). Results always fit the first batch.
//
// Queries: equality (a scalar matches an array that contains it; dotted
// paths reach into embedded documents, array elements by index and the
// documents of arrays), $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin,
// $exists, $not, $size, $all, $elemMatch, $type, $regex with $options (Go's
// RE2 syntax, not PCRE), $mod, $and, $or, $nor, $expr and $comment; any
// other operator fails with BadValue (2), like an unknown one on mongod.
// Sorting follows mongod's order of types; an array sorts by its smallest
// element ascending and its largest descending; {$natural: -1} (sort or
// hint) reverses the insertion order. Arithmetic involving a Decimal128
// ($inc, $mul, $sum, $avg, $add, $multiply, $divide) is exact and stays
// Decimal128. Projections include or exclude dotted paths and compute
// fields from expressions; mixing
// inclusion and exclusion fails as on mongod (31253, 31254), and the
// find-only operators ($slice, $elemMatch, $meta, positional $) fail.
//
// Updates: replacement, and the operators $set, $unset, $inc, $mul, $min,
// $max, $setOnInsert, $currentDate, $rename, $push (with $each, $position,
// $slice, $sort), $addToSet (with $each), $pull, $pullAll and $pop,
// applied in mongod's order (by path) so that new fields land where mongod
// puts them; overlapping paths fail with ConflictingUpdateOperators (40).
// An upsert seeds the new document with the query's equalities (top level
// and in $and, dotted paths as embedded documents). The positional $
// updates the first array element the query matched, $[] every element;
// pipeline updates, $bit, $[<identifier>] and arrayFilters fail.
//
// Aggregation stages: $match, $sort, $skip, $limit, $project, $addFields,
// $set, $unset, $count, $group, $unwind, $replaceRoot, $replaceWith and
// $sortByCount; $group accumulators $sum, $avg, $min, $max, $first, $last,
// $push, $addToSet and $count. Expressions: field paths, $$ROOT,
// $$CURRENT, $$REMOVE, literals, documents and arrays, and $literal, $add,
// $subtract, $multiply, $divide, $mod, $concat, $toLower, $toUpper,
// $ifNull, $cond, $eq, $ne, $gt, $gte, $lt, $lte, $cmp, $and, $or, $not,
// $size, $sum, $avg, $min, $max, $in, $arrayElemAt and $abs. An unknown
// stage fails with 40324 as on mongod; another stage of mongod fails with
// FailedToParse (9), an unsupported expression with
// InvalidPipelineOperator (168), an unsupported accumulator with 15952,
// each error naming what is not supported. A collation other than simple
// fails (strings compare by their bytes).
//
// Indexes: the _id index, and secondary indexes of ascending or descending
// keys, optionally unique and sparse. A unique index makes a duplicate key
// fail with DuplicateKey (11000) naming the index, with keyPattern and
// keyValue, as mongod does; a missing field indexes as null unless the
// index is sparse, and an array indexes each element. Other index types
// and options fail.
//
// # Where it behaves like mongod
//
// These behaviours are relied on by txnmongo's tests and follow mongod:
// failCommand is evaluated before the session is checked out, so an
// injected error leaves the transaction untouched (see FailPoint); a
// command that fails for real inside a transaction (a WriteConflict, a
// DuplicateKey, malformed arguments) aborts it, and the transaction's
// commit then fails with NoSuchTransaction (251) labelled
// TransientTransactionError; a command not allowed in a transaction
// (count, drop, createIndexes) fails with
// OperationNotSupportedInTransaction (263) before the session is checked
// out, so the transaction stays open (and one that carried
// startTransaction starts none); a write error ends a batch in a
// transaction even when it is unordered, as mongod fails the whole batch
// there, and carries no error label; a repeated commitTransaction of a
// committed transaction succeeds again; a newer txnNumber on a session
// aborts the transaction the session had open; a transaction older than
// its lifetime (WithTransactionLifetime) is aborted; a retryable write
// re-sent with the same txnNumber gets its first reply. A collection
// created implicitly inside a transaction (by an insert or upsert, as
// mongod 4.4 and later allow) is part of it: invisible to others until the
// commit, gone after an abort.
//
// # Known differences from mongod
//
// No test leans on these; a test that needs one of them must first make
// mongotest match mongod.
//
//   - Collections: another transaction that writes to a collection an open
//     transaction created gets a WriteConflict labelled
//     TransientTransactionError (mongod may answer with another transient
//     error, such as LockTimeout), and a write outside transactions waits
//     for the creator to end. Explicit creation (create) is allowed in a
//     transaction whatever its read concern, and takes no options
//     (validator, capped, timeseries and the others fail). A transaction
//     may write to a collection created (by someone else) after its
//     snapshot; mongod may refuse that with a transient catalog error
//     (SnapshotUnavailable).
//   - Indexes: no query uses them (every query scans), there are no index
//     builds (createIndexes is immediate, and waits only for transactions
//     holding documents of the collection), and createIndexes is not
//     allowed in a transaction. Unique keys are checked against every
//     document, as a simple model of WiredTiger: a key that another open
//     transaction holds, or that was committed after the snapshot, is a
//     WriteConflict.
//   - Query language: only what is listed above; $regex uses Go's RE2
//     syntax; text, geospatial and $where queries, $lookup, $facet and the
//     other stages fail as described above.
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
