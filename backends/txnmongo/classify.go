package txnmongo

import (
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/txnkit/txn"
)

// Error labels, as the server and the driver attach them.
const (
	labelTransient     = "TransientTransactionError"
	labelUnknownCommit = "UnknownTransactionCommitResult"
	labelNetwork       = "NetworkError"
)

// Server error codes that Classify looks at.
const (
	codeMaxTimeMSExpired            = 50
	codeNoSuchTransaction           = 251
	codeTransactionTooLargeForCache = 388
)

// Classify maps an error from the MongoDB driver to a txn.Class by its
// error labels, as the MongoDB transactions specification and the driver's
// own Session.WithTransaction do, never by the code's name:
//
//	error                                                  class
//	label UnknownTransactionCommitResult                   commit-retryable: re-send only commitTransaction
//	  ... with code 50 MaxTimeMSExpired                    ambiguous: Run returns txn.ErrCommitUnknown
//	  ... with code 50 and TransientTransactionError       retryable
//	label TransientTransactionError                        retryable: abort, run fn in a new transaction
//	code 388 TransactionTooLargeForCache, labelled or not  permanent
//	label NetworkError without the two labels above        permanent
//	anything else (11000 DuplicateKey, unlabelled codes)   permanent
//
// An error of the Runner's own commitTransaction carries the class its
// Commit decided, which is the table's except for a commit that reached
// no server: retryable when no commit of the transaction can have
// reached one (nothing was committed), ambiguous after an earlier commit
// whose outcome was unknown.
//
// UnknownTransactionCommitResult comes only from commitTransaction: the
// driver adds it to network errors, retryable errors, write concern
// errors and MaxTimeMSExpired of the commit. Re-sending commitTransaction
// for the same transaction is safe: the server commits it once and answers
// a repeated commit with the first outcome. MaxTimeMSExpired is the
// exception the specification makes: the commit ran out of the time it
// was given, retrying it would exceed that time, and its outcome is
// unknown, so Run reports txn.ErrCommitUnknown (an Idempotent call runs fn
// again instead).
//
// TransientTransactionError means the server aborted the transaction (a
// WriteConflict 112, a LockTimeout 24, a NoSuchTransaction 251 after an
// abort, a network error before the commit, a primary stepping down):
// nothing of it was committed. Code 388 is not retried because the same
// transaction would not fit the cache again; the MongoDB manual says that
// since 6.2 it is not retried (the server no longer labels it
// TransientTransactionError), and Classify holds to that even when an
// older server sends the label.
//
// A NetworkError without a transaction label is permanent. The driver
// labels a network error of an operation in a running transaction
// TransientTransactionError and one of commitTransaction
// UnknownTransactionCommitResult, so an unlabelled one came from an
// operation outside the transaction (fn used a context without the
// session, or another client): aborting the transaction does not undo
// it, it may have been applied, and running fn again could apply it
// twice. fn can return txn.Retry(err) for an operation it knows is safe
// to repeat.
//
// Codes are never classified by name, so the mislabelled codes of some
// published tables (189 is PrimarySteppedDown, 262 ExceededTimeLimit, 13435
// NotPrimaryNoSecondaryOk, 10107 NotWritablePrimary, 11600
// InterruptedAtShutdown, 251 NoSuchTransaction, 24 LockTimeout) cannot
// mislead it: their labels decide.
func Classify(err error) txn.Class {
	if err == nil {
		return txn.ClassPermanent
	}
	var ce *commitError
	if errors.As(err, &ce) {
		return ce.class
	}
	if hasCode(err, codeTransactionTooLargeForCache) {
		return txn.ClassPermanent
	}
	switch {
	case hasLabel(err, labelUnknownCommit):
		if !isMaxTimeMSExpired(err) {
			return txn.ClassCommitRetryable
		}
		if hasLabel(err, labelTransient) {
			return txn.ClassRetryable
		}
		return txn.ClassAmbiguous
	case hasLabel(err, labelTransient):
		return txn.ClassRetryable
	}
	return txn.ClassPermanent
}

// answered reports whether err carries an answer from a server: a command
// error with a code or code name, or a write or write concern error.
func answered(err error) bool {
	var ce mongo.CommandError
	if errors.As(err, &ce) && (ce.Code != 0 || ce.Name != "") {
		return true
	}
	var we mongo.WriteException
	if errors.As(err, &we) {
		return true
	}
	var be mongo.BulkWriteException
	return errors.As(err, &be)
}

// notSent reports whether err shows that the command was never written to
// a connection: no server could be selected, no connection could be
// opened or checked out. A network error on an open connection is
// labelled NetworkError and may have reached the server.
func notSent(err error) bool {
	if hasLabel(err, labelNetwork) {
		return false
	}
	var sse topology.ServerSelectionError
	var wqe topology.WaitQueueTimeoutError
	var ce topology.ConnectionError
	return errors.As(err, &sse) || errors.As(err, &wqe) || errors.As(err, &ce)
}

// hasLabel reports whether an error in err's chain carries label.
func hasLabel(err error, label string) bool {
	var le mongo.LabeledError
	return errors.As(err, &le) && le.HasErrorLabel(label)
}

// hasCode reports whether a server error in err's chain carries code,
// including the codes of write errors and write concern errors.
func hasCode(err error, code int) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(code)
}

// isCode reports whether err is a command error with code.
func isCode(err error, code int32) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && ce.Code == code
}

// isMaxTimeMSExpired reports a MaxTimeMSExpired error, by code or name,
// from the command or from its write concern.
func isMaxTimeMSExpired(err error) bool {
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.IsMaxTimeMSExpiredError() {
		return true
	}
	return hasCode(err, codeMaxTimeMSExpired)
}
