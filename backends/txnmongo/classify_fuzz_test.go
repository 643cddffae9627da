package txnmongo_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/backends/txnmongo"
	"github.com/txnkit/txn/internal/errchain/errtest"
)

// typedNils are nil pointers to the driver's error types. Their methods
// have value receivers, so any call through the nil pointer panics:
// errors.As hands them out as a mongo.LabeledError or mongo.ServerError,
// and errors.Is and errors.As call Unwrap on a nil *CommandError.
var typedNils = []error{
	(*mongo.CommandError)(nil),
	(*mongo.WriteException)(nil),
	(*mongo.BulkWriteException)(nil),
	(*mongo.WriteConcernError)(nil),
	(*mongo.WriteError)(nil),
}

func TestClassifyTypedNilNeverPanics(t *testing.T) {
	errtest.PermanentWithoutPanic(t, map[string]txn.Classifier{"Classify": txnmongo.Classify}, typedNils, func(tn error) map[string]error {
		return map[string]error{"in a command": mongo.CommandError{Code: 112, Wrapped: tn}}
	})
}

func TestClassifyLooksPastTypedNils(t *testing.T) {
	conflict := mongo.CommandError{Code: 112, Name: "WriteConflict", Labels: []string{"TransientTransactionError"}}
	unknown := mongo.CommandError{Code: 91, Labels: []string{"UnknownTransactionCommitResult"}}
	for _, tn := range typedNils {
		t.Run(fmt.Sprintf("%T", tn), func(t *testing.T) {
			errtest.LooksPast(t, txnmongo.Classify, tn, conflict, txn.ClassRetryable)
			errtest.LooksPast(t, txnmongo.Classify, tn, unknown, txn.ClassCommitRetryable)
			errtest.LooksPast(t, txnmongo.Classify, tn, mongo.WriteException{}, txn.ClassPermanent)
		})
	}
}

// fuzzLabels picks labels from the bits of mask, plus extra if non-empty.
func fuzzLabels(mask uint8, extra string) []string {
	var out []string
	for i, l := range []string{"TransientTransactionError", "UnknownTransactionCommitResult", "NetworkError", "RetryableWriteError"} {
		if mask&(1<<i) != 0 {
			out = append(out, l)
		}
	}
	if extra != "" {
		out = append(out, extra)
	}
	return out
}

// fuzzBase builds the error a fuzz input describes.
func fuzzBase(kind uint8, code int32, msg string, labels []string) error {
	switch kind % 6 {
	case 0:
		return mongo.CommandError{Code: code, Message: msg, Name: msg, Labels: labels}
	case 1:
		return mongo.CommandError{Code: code, Labels: labels, Wrapped: errors.New(msg)}
	case 2:
		return mongo.WriteException{
			WriteConcernError: &mongo.WriteConcernError{Code: int(code), Message: msg},
			Labels:            labels,
		}
	case 3:
		return mongo.WriteException{WriteErrors: mongo.WriteErrors{{Code: int(code), Message: msg}}, Labels: labels}
	case 4:
		return mongo.BulkWriteException{WriteErrors: []mongo.BulkWriteError{{WriteError: mongo.WriteError{Code: int(code)}}}, Labels: labels}
	default:
		return typedNils[int(uint32(code))%len(typedNils)]
	}
}

// FuzzClassify feeds Classify the driver's error types with fuzzed codes,
// messages and labels, wrapped to a fuzzed depth and joined with typed
// nils. Properties: no panic; a known Class; wrapping, errors.Join and a
// type with Unwrap() []error do not change the class; a typed nil alone,
// however wrapped, is permanent; an error without the three labels is
// permanent; UnknownTransactionCommitResult without MaxTimeMSExpired (code
// 50, or the name on a command error) or code 388 means commit-retryable;
// code 388 is never retried.
func FuzzClassify(f *testing.F) {
	for _, code := range []int32{0, 24, 50, 112, 189, 251, 262, 388, 10107, 11000, 11600, 13435, -1, 1 << 30} {
		for mask := uint8(0); mask < 8; mask++ {
			f.Add(uint8(code%5), code, "WriteConflict", mask, "", uint8(1), uint8(0))
		}
	}
	f.Add(uint8(5), int32(0), "", uint8(0), "", uint8(0), uint8(3))
	f.Add(uint8(0), int32(50), "MaxTimeMSExpired", uint8(3), "x", uint8(2), uint8(4))
	f.Fuzz(func(t *testing.T, kind uint8, code int32, msg string, mask uint8, extra string, depth, shape uint8) {
		labels := fuzzLabels(mask, extra)
		base := fuzzBase(kind, code, msg, labels)
		tn := typedNils[int(shape)%len(typedNils)]
		d := int(depth % 32)

		c := errtest.Invariant(t, txnmongo.Classify, base, tn, d)

		if kind%6 == 5 {
			return
		}
		if mask&7 == 0 {
			assert.Equal(t, txn.ClassPermanent, c, "no transaction label")
		}
		if code == 388 {
			assert.Equal(t, txn.ClassPermanent, c, "TransactionTooLargeForCache")
		}
		// MaxTimeMSExpired is recognised by code (50) or, on a command
		// error, by name; kind 0 uses msg as the name.
		maxTime := code == 50 || (kind%6 == 0 && msg == "MaxTimeMSExpired")
		if mask&2 != 0 && !maxTime && code != 388 {
			assert.Equal(t, txn.ClassCommitRetryable, c, "UnknownTransactionCommitResult")
		}
	})
}
