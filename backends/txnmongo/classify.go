package txnmongo

import (
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
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
//
// Classify looks at every error of err's chain (%w, errors.Join, any
// Unwrap() []error) and never panics: a typed nil in the chain, such as a
// nil *mongo.CommandError (whose value-receiver methods panic on a nil
// pointer), is skipped as if absent, so an error holding only typed nils
// is permanent.
func Classify(err error) txn.Class {
	if err == nil {
		return txn.ClassPermanent
	}
	if ce, ok := errchain.As[*commitError](err); ok {
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
	return anyError(err, func(ce mongo.CommandError) bool { return ce.Code != 0 || ce.Name != "" }) ||
		anyError(err, func(mongo.WriteException) bool { return true }) ||
		anyError(err, func(mongo.BulkWriteException) bool { return true })
}

// notSent reports whether err shows that the command was never written to
// a connection: no server could be selected, no connection could be
// opened or checked out. A network error on an open connection is
// labelled NetworkError and may have reached the server.
func notSent(err error) bool {
	if hasLabel(err, labelNetwork) {
		return false
	}
	return anyError(err, func(topology.ServerSelectionError) bool { return true }) ||
		anyError(err, func(topology.WaitQueueTimeoutError) bool { return true }) ||
		anyError(err, func(topology.ConnectionError) bool { return true })
}

// anyError reports whether f holds for an error of err's chain that is a
// T. Typed nils are skipped and a method that panics counts as false
// (errchain.Any), so f may call the driver's methods freely.
func anyError[T error](err error, f func(T) bool) bool {
	return errchain.Any(err, func(e error) bool {
		var t T
		return errors.As(e, &t) && f(t)
	})
}

// hasLabel reports whether an error in err's chain carries label.
func hasLabel(err error, label string) bool {
	return anyError(err, func(le mongo.LabeledError) bool { return le.HasErrorLabel(label) })
}

// hasCode reports whether a server error in err's chain carries code,
// including the codes of write errors and write concern errors.
func hasCode(err error, code int) bool {
	return anyError(err, func(se mongo.ServerError) bool { return se.HasErrorCode(code) })
}

// isCode reports whether err's chain holds a command error with code.
func isCode(err error, code int32) bool {
	return anyError(err, func(ce mongo.CommandError) bool { return ce.Code == code })
}

// isMaxTimeMSExpired reports a MaxTimeMSExpired error, by code or name,
// from the command or from its write concern.
func isMaxTimeMSExpired(err error) bool {
	return anyError(err, mongo.CommandError.IsMaxTimeMSExpiredError) ||
		hasCode(err, codeMaxTimeMSExpired)
}
