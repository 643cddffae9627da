package mongotest

import (
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Server error codes used by this package, with the names MongoDB gives them.
const (
	codeBadValue                       = 2
	codeFailedToParse                  = 9
	codeUnauthorized                   = 13
	codeTypeMismatch                   = 14
	codePathNotViable                  = 28
	codeConflictingUpdateOperators     = 40
	codeCursorNotFound                 = 43
	codeInvalidIDField                 = 53
	codeEmptyFieldName                 = 56
	codeMaxTimeMSExpired               = 50
	codeCommandNotFound                = 59
	codeImmutableField                 = 66
	codeInvalidOptions                 = 72
	codeInvalidNamespace               = 73
	codeShutdownInProgress             = 91
	codeWriteConflict                  = 112
	codeConflictingOperationInProgress = 117
	codeIncompleteTransactionHistory   = 217
	codeTransactionTooOld              = 225
	codeNoSuchTransaction              = 251
	codeTransactionCommitted           = 256
	codeOperationNotSupportedInTxn     = 263
	codeUnsupportedOpQueryCommand      = 352
	codeDuplicateKey                   = 11000
)

// codeName returns MongoDB's name for code, or "" when this package does not
// know it.
func codeName(code int32) string {
	switch code {
	case 1:
		return "InternalError"
	case 2:
		return "BadValue"
	case 6:
		return "HostUnreachable"
	case 7:
		return "HostNotFound"
	case 9:
		return "FailedToParse"
	case 11:
		return "UserNotFound"
	case 13:
		return "Unauthorized"
	case 14:
		return "TypeMismatch"
	case 20:
		return "IllegalOperation"
	case 24:
		return "LockTimeout"
	case 26:
		return "NamespaceNotFound"
	case 28:
		return "PathNotViable"
	case 40:
		return "ConflictingUpdateOperators"
	case 43:
		return "CursorNotFound"
	case 48:
		return "NamespaceExists"
	case 50:
		return "MaxTimeMSExpired"
	case 53:
		return "InvalidIdField"
	case 56:
		return "EmptyFieldName"
	case 59:
		return "CommandNotFound"
	case 64:
		return "WriteConcernFailed"
	case 66:
		return "ImmutableField"
	case 72:
		return "InvalidOptions"
	case 73:
		return "InvalidNamespace"
	case 79:
		return "UnknownReplWriteConcern"
	case 89:
		return "NetworkTimeout"
	case 91:
		return "ShutdownInProgress"
	case 100:
		return "UnsatisfiableWriteConcern"
	case 112:
		return "WriteConflict"
	case 117:
		return "ConflictingOperationInProgress"
	case 134:
		return "ReadConcernMajorityNotAvailableYet"
	case 189:
		return "PrimarySteppedDown"
	case 217:
		return "IncompleteTransactionHistory"
	case 225:
		return "TransactionTooOld"
	case 244:
		return "TransactionAborted"
	case 246:
		return "SnapshotUnavailable"
	case 251:
		return "NoSuchTransaction"
	case 256:
		return "TransactionCommitted"
	case 262:
		return "ExceededTimeLimit"
	case 263:
		return "OperationNotSupportedInTransaction"
	case 352:
		return "UnsupportedOpQueryCommand"
	case 388:
		return "TransactionTooLargeForCache"
	case 9001:
		return "SocketException"
	case 10107:
		return "NotWritablePrimary"
	case 11000:
		return "DuplicateKey"
	case 11600:
		return "InterruptedAtShutdown"
	case 11601:
		return "Interrupted"
	case 11602:
		return "InterruptedDueToReplStateChange"
	case 13435:
		return "NotPrimaryNoSecondaryOk"
	case 13436:
		return "NotPrimaryOrSecondary"
	}
	return ""
}

// isRetryableCode reports whether MongoDB labels code RetryableWriteError on
// a retryable write, commitTransaction or abortTransaction.
func isRetryableCode(code int32) bool {
	switch code {
	case 6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436:
		return true
	}
	return false
}

// isTransientCode reports whether MongoDB labels code
// TransientTransactionError on any command inside a transaction.
func isTransientCode(code int32) bool {
	switch code {
	case 24, 112, 246, 251:
		return true
	}
	return false
}

// cmdError is a command failure reported to the client as {ok: 0, ...}.
type cmdError struct {
	code   int32
	msg    string
	labels []string
	// explicitLabels is true when labels came from a fail point and must be
	// sent as they are instead of being derived from the code.
	explicitLabels bool
	// blocked marks the internal outcome "wait for a lock and try again";
	// it never reaches a client.
	blocked bool
	// details are extra fields of the error, such as the keyPattern and
	// keyValue of a DuplicateKey.
	details bson.D
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("(%s) %s", codeName(e.code), e.msg)
}

// errorf returns a cmdError with the given code and formatted message.
func errorf(code int32, format string, args ...any) *cmdError {
	return &cmdError{code: code, msg: fmt.Sprintf(format, args...)}
}

// autoLabels returns the error labels MongoDB attaches to an error with the
// given code for the request req: TransientTransactionError inside
// transactions, RetryableWriteError for retryable writes and for
// commitTransaction and abortTransaction.
func autoLabels(code int32, req *request, hasWriteConcernError bool) []string {
	var labels []string
	commitOrAbort := req.name == "commitTransaction" || req.name == "abortTransaction"
	if req.inTxn && req.hasTxnNumber {
		transient := isTransientCode(code)
		if !commitOrAbort {
			transient = transient || isRetryableCode(code)
		} else if code == codeNoSuchTransaction && hasWriteConcernError {
			transient = false
		}
		if transient {
			labels = append(labels, "TransientTransactionError")
		}
	}
	retryableWrite := commitOrAbort || (req.hasTxnNumber && !req.inTxn && isWriteCommand(req.name))
	if retryableWrite && isRetryableCode(code) {
		labels = append(labels, "RetryableWriteError")
	}
	return labels
}
