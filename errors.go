package txn

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/txnkit/txn/internal/errchain"
)

// Class says what an error means for the transaction that produced it and so
// what Run does next. Backends map their driver's errors to a Class with a
// Classifier; fn can force a class with Retry and Permanent.
type Class uint8

const (
	// ClassPermanent errors are returned to the caller as they are. It is the
	// zero value: an error nobody recognised is never retried.
	ClassPermanent Class = iota
	// ClassRetryable errors mean the database rolled the transaction back (or
	// will, once Run rolls it back): fn is run again in a fresh transaction.
	ClassRetryable
	// ClassCommitRetryable errors, returned by a commit, mean the commit may
	// be sent again on the same transaction (MongoDB's
	// UnknownTransactionCommitResult). fn is not run again.
	ClassCommitRetryable
	// ClassAmbiguous errors mean the commit may or may not have happened. Run
	// never runs fn again for them unless the call was declared Idempotent;
	// it returns an error that matches ErrCommitUnknown. Seen before the
	// commit was sent (a statement of unknown outcome), the error is
	// retryable: the transaction is rolled back with whatever it did.
	ClassAmbiguous
	// ClassConnLost errors mean the connection failed and the server may or
	// may not have seen the last request. Before the commit was sent this is
	// retryable (an uncommitted transaction dies with its connection); during
	// the commit it is ambiguous. Run decides which from where it happened.
	ClassConnLost
)

// String returns the class's name, as used in logs.
func (c Class) String() string {
	switch c {
	case ClassPermanent:
		return "permanent"
	case ClassRetryable:
		return "retryable"
	case ClassCommitRetryable:
		return "commit-retryable"
	case ClassAmbiguous:
		return "ambiguous"
	case ClassConnLost:
		return "connection-lost"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// A Classifier maps an error to a Class. It must be safe for concurrent use
// and must return ClassPermanent for errors it does not recognise. Backends
// export theirs as plain functions so that users can wrap them.
type Classifier func(err error) Class

// Sentinel errors. Match them with errors.Is.
var (
	// ErrCommitUnknown is matched by the error Run returns when the outcome
	// of the commit is unknown: the connection was lost while the commit was
	// in flight, the context ended before it was answered, or commit
	// retries ran out; fn was not run again. It is also matched when an
	// Idempotent call ran fn again after such a commit and then stopped
	// without a commit (attempts, time, a later error): the earlier commit
	// may have happened. An error of fn that matches it (the unknown
	// commit of another Run that fn ran on a context of its own) is never
	// retried, whatever its cause, unless fn marks it with Retry: running
	// fn again could apply that Run's writes twice.
	ErrCommitUnknown = errors.New("txn: commit outcome unknown")
	// ErrAttemptsExhausted is matched when Run gave up because the attempt
	// limit was reached.
	ErrAttemptsExhausted = errors.New("txn: attempt limit reached")
	// ErrElapsedExhausted is matched when Run gave up because the next retry
	// would have ended past the elapsed-time limit.
	ErrElapsedExhausted = errors.New("txn: elapsed-time limit reached")
	// ErrBudgetExhausted is matched when Run gave up because the Runner's
	// retry budget had no token left for another retry.
	ErrBudgetExhausted = errors.New("txn: retry budget exhausted")
	// ErrUnavailable is matched when Run gave up because BEGIN kept failing
	// (the database could not be reached, so fn did not run) and the
	// Runner's reconnect budget had no token left for another try, or
	// because fn found no server (MongoDB, see UnreachableClassifier):
	// while the database is down, Runs fail fast instead of each retrying
	// up to MaxAttempts times. See ReconnectBudget.
	ErrUnavailable = errors.New("txn: database unavailable")
	// ErrNilFunc is returned when Run or Do is given a nil function.
	ErrNilFunc = errors.New("txn: nil function")
	// ErrNilRunner is returned by the methods of a nil *Runner and by a
	// Runner built over a nil backend or database handle.
	ErrNilRunner = errors.New("txn: nil runner or database handle")
	// ErrNilContext is returned when Run is given a nil context.
	ErrNilContext = errors.New("txn: nil context")
	// ErrBadOption is matched by the error of a Runner or call configured
	// with an invalid option (a negative limit, a nil policy, ...).
	ErrBadOption = errors.New("txn: invalid option")
	// ErrForeignRunner is returned when Run is called, inside the fn of
	// another Runner's Run, on a different Runner. Transactions of two
	// Runners cannot be joined; call the inner Run on the outer Runner (or a
	// WithBegin view of it), or outside the outer fn.
	ErrForeignRunner = errors.New("txn: Run called inside a transaction of another Runner; " +
		"call it on the outer Runner (or a WithBegin view of it) to join that transaction, or outside the outer fn")
	// ErrTxDone is wrapped by backends when a commit or rollback finds the
	// transaction already finished. Run turns it into ErrFnFinishedTx.
	ErrTxDone = errors.New("txn: transaction already finished")
	// ErrFnFinishedTx is matched when fn committed or rolled back the
	// transaction itself. Run owns the transaction's life cycle: fn must
	// only use it. Whatever fn then returns (nil, Retry, a retryable or a
	// permanent error, which the returned error also matches), and even if
	// the context ends at the same moment, Run never runs fn again for
	// it, runs no OnCommit callbacks, and returns an error matching this;
	// whether fn's own commit succeeded is fn's knowledge.
	ErrFnFinishedTx = errors.New("txn: fn committed or rolled back the transaction itself; leave that to Run")
	// ErrNoTransaction is returned by OnCommit and Savepoint when the context
	// carries no transaction of a Runner, or only one that has ended (a
	// context kept past its Run, as in an OnCommit callback).
	ErrNoTransaction = errors.New("txn: no transaction in context")
	// ErrSavepointUnsupported is returned by Savepoint on a backend that has
	// no savepoints (MongoDB). A nested Run on such a backend joins the outer
	// transaction instead.
	ErrSavepointUnsupported = errors.New("txn: savepoints not supported by this backend")
)

// fnFinishedError is returned when fn ended the transaction itself. It
// matches ErrFnFinishedTx, fn's own error if it returned one, and the
// backend's error, which wraps ErrTxDone, and says so once.
type fnFinishedError struct {
	fnErr error // what fn returned, nil if nothing
	err   error // the commit's or rollback's error, wrapping ErrTxDone
}

func (e *fnFinishedError) Error() string {
	if e.fnErr != nil {
		return ErrFnFinishedTx.Error() + " (fn returned: " + strings.TrimPrefix(e.fnErr.Error(), "txn: ") + ")"
	}
	cause := strings.Replace(e.err.Error(), ErrTxDone.Error()+": ", "", 1)
	cause = strings.Replace(cause, ErrTxDone.Error(), "transaction already finished", 1)
	return ErrFnFinishedTx.Error() + " (commit said: " + cause + ")"
}

func (e *fnFinishedError) Unwrap() []error {
	if e.fnErr != nil {
		return []error{ErrFnFinishedTx, e.fnErr, e.err}
	}
	return []error{ErrFnFinishedTx, e.err}
}

// markedError carries the class fn asked for through Retry or Permanent.
type markedError struct {
	err   error
	class Class
}

// Error is the marked error's message; a typed nil error whose Error
// method panics (Retry((*myErr)(nil))) gets a placeholder instead.
func (e *markedError) Error() string { return errchain.Leaf(e.err).Error() }
func (e *markedError) Unwrap() error { return e.err }

// Retry marks err as retryable: when fn returns it (or an error wrapping it),
// Run rolls back and runs fn again, within the Runner's limits. Use it for
// conditions the database does not report, such as a failed optimistic
// version check. Retry(nil) returns nil.
func Retry(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, class: ClassRetryable}
}

// Permanent marks err as permanent: Run rolls back and returns it without
// retrying, even if the database classified it as retryable. Run returns the
// marked error, which unwraps to err. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, class: ClassPermanent}
}

// marked reports the class set by Retry or Permanent on err's chain.
func marked(err error) (Class, bool) {
	// errchain, unlike errors.As, skips typed nils that fn's error may
	// wrap (a nil *net.OpError, say) instead of calling their methods.
	if m, ok := errchain.As[*markedError](err); ok {
		return m.class, true
	}
	return 0, false
}

// GiveUpError is returned when Run stops without a commit for a reason other
// than a permanent error: a limit was reached, the context ended, the retry
// budget ran out, or the commit outcome became unknown. It matches, through
// errors.Is and errors.As, both the reason (ErrAttemptsExhausted,
// ErrElapsedExhausted, ErrBudgetExhausted, ErrCommitUnknown,
// context.DeadlineExceeded, context.Canceled) and the last database error.
type GiveUpError struct {
	// Reason says why Run stopped.
	Reason error
	// Ambiguous is true when the last commit's outcome is unknown; the error
	// then also matches ErrCommitUnknown.
	Ambiguous bool
	// Attempts is the number of times fn ran.
	Attempts int
	// Unreachable is the number of tries that could not reach the
	// database: BEGIN failed, so fn did not run, or (MongoDB, see
	// UnreachableClassifier) fn ran but found no server. MaxAttempts
	// bounds the tries: the runs of fn plus the failed BEGINs.
	Unreachable int
	// Elapsed is the time from the start of Run to giving up.
	Elapsed time.Duration
	// Last is the last error seen from the database or from fn.
	Last error
}

// Error describes why Run stopped, after how many attempts (and, when BEGIN
// failed, how many times fn ran and how many times the database could not be
// reached), and the last error.
func (e *GiveUpError) Error() string {
	var b strings.Builder
	b.WriteString("txn: gave up after ")
	if e.Unreachable > 0 {
		fmt.Fprintf(&b, "fn ran %d time%s and the database could not be reached %d time%s",
			e.Attempts, plural(e.Attempts), e.Unreachable, plural(e.Unreachable))
	} else {
		fmt.Fprintf(&b, "%d attempt%s", e.Attempts, plural(e.Attempts))
	}
	fmt.Fprintf(&b, " in %v", e.Elapsed.Round(time.Microsecond))
	// The reason is left out when the last error already says it, as a
	// driver's "timeout: context deadline exceeded" does.
	if e.Reason != nil && (e.Last == nil || !errchain.Is(e.Last, e.Reason)) {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Reason.Error(), "txn: "))
	}
	if e.Ambiguous && !errors.Is(e.Reason, ErrCommitUnknown) {
		b.WriteString(" (commit outcome unknown)")
	}
	if e.Last != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(errchain.Leaf(e.Last).Error(), "txn: "))
	}
	return b.String()
}

// Unwrap returns the reason, ErrCommitUnknown when the outcome is unknown, and
// the last error, so that errors.Is and errors.As see all of them.
func (e *GiveUpError) Unwrap() []error {
	errs := make([]error, 0, 3)
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	if e.Ambiguous && !errors.Is(e.Reason, ErrCommitUnknown) {
		errs = append(errs, ErrCommitUnknown)
	}
	if e.Last != nil {
		errs = append(errs, e.Last)
	}
	return errs
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
