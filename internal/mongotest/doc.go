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
package mongotest
