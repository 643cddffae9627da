package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
)

const (
	transient = "TransientTransactionError"
	unknown   = "UnknownTransactionCommitResult"
	network   = "NetworkError"
	retryable = "RetryableWriteError"
)

// cmdErr builds a mongo.CommandError as the driver returns it.
func cmdErr(code int32, name string, labels ...string) mongo.CommandError {
	return mongo.CommandError{Code: code, Name: name, Message: "constructed", Labels: labels}
}

// labelled is a labelled error of another type than the driver's.
type labelled struct{ label string }

func (l labelled) Error() string               { return "labelled " + l.label }
func (l labelled) HasErrorLabel(s string) bool { return s == l.label }

// classifyCase is one row of TestClassify.
type classifyCase struct {
	name string
	err  error
	want txn.Class
}

// TestClassify covers every row of Classify's table with constructed
// errors of each type the driver returns: mongo.CommandError (command
// failures, commit failures, network errors), mongo.WriteException (write
// errors, write concern errors), mongo.BulkWriteException, wrapped and
// joined errors.
func TestClassify(t *testing.T) {
	tests := []classifyCase{
		{"nil", nil, txn.ClassPermanent},

		// TransientTransactionError: the transaction was aborted.
		{"WriteConflict 112 labelled", cmdErr(112, "WriteConflict", transient), txn.ClassRetryable},
		{"NoSuchTransaction 251 labelled", cmdErr(251, "NoSuchTransaction", transient), txn.ClassRetryable},
		{"LockTimeout 24 labelled", cmdErr(24, "LockTimeout", transient), txn.ClassRetryable},
		{"network error before commit", cmdErr(0, "", network, transient), txn.ClassRetryable},
		{"server selection in a transaction", cmdErr(0, "", transient), txn.ClassRetryable},
		{"labelled WriteException", mongo.WriteException{Labels: []string{transient}, WriteErrors: mongo.WriteErrors{{Code: 112}}}, txn.ClassRetryable},
		{"labelled BulkWriteException", mongo.BulkWriteException{Labels: []string{transient}}, txn.ClassRetryable},
		{"labelled error of another type", labelled{transient}, txn.ClassRetryable},

		// UnknownTransactionCommitResult: only the commit is re-sent.
		{"write concern failed 64 at commit", cmdErr(64, "WriteConcernFailed", unknown), txn.ClassCommitRetryable},
		{"ShutdownInProgress 91 at commit", cmdErr(91, "ShutdownInProgress", retryable, unknown), txn.ClassCommitRetryable},
		{"network error at commit", cmdErr(0, "", network, unknown), txn.ClassCommitRetryable},

		// ... except MaxTimeMSExpired, whose outcome is unknown.
		{"MaxTimeMSExpired 50 at commit", cmdErr(50, "MaxTimeMSExpired", unknown), txn.ClassAmbiguous},
		{"MaxTimeMSExpired by name only", cmdErr(0, "MaxTimeMSExpired", unknown), txn.ClassAmbiguous},
		{"MaxTimeMSExpired in the write concern", mongo.WriteException{
			WriteConcernError: &mongo.WriteConcernError{Code: 50, Name: "MaxTimeMSExpired"},
			Labels:            []string{unknown},
		}, txn.ClassAmbiguous},
		{"MaxTimeMSExpired also transient", cmdErr(50, "MaxTimeMSExpired", unknown, transient), txn.ClassRetryable},
		{"MaxTimeMSExpired unlabelled", cmdErr(50, "MaxTimeMSExpired"), txn.ClassPermanent},

		// 388 is never retried, labelled or not.
		{"TransactionTooLargeForCache 388", cmdErr(388, "TransactionTooLargeForCache"), txn.ClassPermanent},
		{"388 labelled by an old server", cmdErr(388, "TransactionTooLargeForCache", transient), txn.ClassPermanent},
		{"388 as a write error", mongo.WriteException{Labels: []string{transient}, WriteErrors: mongo.WriteErrors{{Code: 388}}}, txn.ClassPermanent},

		// DuplicateKey and other unlabelled errors are permanent.
		{"DuplicateKey 11000 write error", mongo.WriteException{WriteErrors: mongo.WriteErrors{{Code: 11000, Message: "E11000 duplicate key error"}}}, txn.ClassPermanent},
		{"DuplicateKey 11000 command error", cmdErr(11000, "DuplicateKey"), txn.ClassPermanent},
		{"DuplicateKey in a bulk write", mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{{WriteError: mongo.WriteError{Code: 11000}}}}, txn.ClassPermanent},
		{"WriteConflict 112 unlabelled", cmdErr(112, "WriteConflict"), txn.ClassPermanent},
		{"retryable write label only", cmdErr(91, "ShutdownInProgress", retryable), txn.ClassPermanent},

		// A network error the driver did not tie to a transaction: an operation
		// outside it, which aborting does not undo (permanent).
		{"network error alone", cmdErr(0, "", network), txn.ClassPermanent},

		// Wrapped and joined errors are searched.
		{"wrapped", fmt.Errorf("repo: save: %w", cmdErr(112, "WriteConflict", transient)), txn.ClassRetryable},
		{"joined", errors.Join(io.EOF, cmdErr(64, "WriteConcernFailed", unknown)), txn.ClassCommitRetryable},

		// Not the driver's: permanent.
		{"no documents", mongo.ErrNoDocuments, txn.ClassPermanent},
		{"client disconnected", mongo.ErrClientDisconnected, txn.ClassPermanent},
		{"context canceled", context.Canceled, txn.ClassPermanent},
		{"plain error", errors.New("boom"), txn.ClassPermanent},
	}
	// Codes that some published tables mislabel: their class comes from
	// the labels, never from the code.
	for _, c := range []struct {
		code int32
		name string
	}{
		{189, "PrimarySteppedDown"}, {262, "ExceededTimeLimit"}, {13435, "NotPrimaryNoSecondaryOk"},
		{10107, "NotWritablePrimary"}, {11600, "InterruptedAtShutdown"}, {251, "NoSuchTransaction"}, {24, "LockTimeout"},
	} {
		tests = append(tests,
			classifyCase{fmt.Sprintf("%d %s unlabelled", c.code, c.name), cmdErr(c.code, c.name), txn.ClassPermanent},
			classifyCase{fmt.Sprintf("%d %s transient", c.code, c.name), cmdErr(c.code, c.name, transient), txn.ClassRetryable},
			classifyCase{fmt.Sprintf("%d %s at commit", c.code, c.name), cmdErr(c.code, c.name, retryable, unknown), txn.ClassCommitRetryable},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := txnmongo.Classify(tt.err)
			assert.EqualValues(t, tt.want, got, "Classify(%v) = %v, want %v", tt.err, got, tt.want)
		})
	}
}
