package txn

import (
	"context"
	"strconv"
)

// Interceptor injects faults into the transactions of a Runner view made by
// Runner.WithInterceptor. It is meant for tests: package txntest builds
// Interceptors that force retries at chosen points of chosen attempts, so
// that a test can prove that fn is safe to run again. A Runner without an
// Interceptor pays one nil check per point, nothing more.
//
// Intercept is called at each point of every attempt of an outermost Run,
// in the order BEGIN, BeforeCommit, Commit, AfterCommit, with the number of
// the attempt (1 for the first execution of fn). It returns nil to let the
// attempt go on, or the error the attempt fails with at that point.
// Intercept is never called by a nested Run or a Savepoint: they join the
// outermost transaction, whose faults undo their work too. It must be safe
// for concurrent use when the view is shared by several goroutines.
type Interceptor interface {
	// Intercept returns nil to let attempt go on past point at, or the
	// error the attempt fails with there. ctx is the Run's context.
	Intercept(ctx context.Context, at InterceptPoint, attempt int) error
}

// InterceptPoint is where in an attempt an Interceptor is consulted, and so
// what an error it returns means.
//
// At the first three points nothing has been committed: the attempt's
// transaction (if begun) is rolled back, on the server, and the error is
// classified as an error from the database would be, after the marks of
// Retry and Permanent: return Retry(err) to force a retry, anything else to
// make Run fail as it would on that error. At InterceptAfterCommit the
// transaction has really committed and the error stands for a reply lost on
// the way back: it is always ClassAmbiguous, so Run returns an error
// matching ErrCommitUnknown, or runs fn again for an Idempotent call.
type InterceptPoint uint8

const (
	// InterceptBegin is consulted before the attempt's transaction begins;
	// an error there is a failed BEGIN.
	InterceptBegin InterceptPoint = iota + 1
	// InterceptBeforeCommit is consulted after fn returned nil, with fn's
	// statements executed in the still open transaction; an error there is
	// handled as if fn had returned it, so the database rolls back real
	// work.
	InterceptBeforeCommit
	// InterceptCommit is consulted in place of the COMMIT: an error there is
	// a definite commit failure (the transaction is rolled back instead of
	// committed).
	InterceptCommit
	// InterceptAfterCommit is consulted after the COMMIT succeeded, before
	// the Committed event and the OnCommit callbacks: an error there makes
	// the outcome unknown to Run although the work is committed.
	InterceptAfterCommit
)

// String returns the point's name, as used in messages: "BEGIN", "before
// COMMIT", "COMMIT", "after COMMIT".
func (p InterceptPoint) String() string {
	switch p {
	case InterceptBegin:
		return "BEGIN"
	case InterceptBeforeCommit:
		return "before COMMIT"
	case InterceptCommit:
		return "COMMIT"
	case InterceptAfterCommit:
		return "after COMMIT"
	}
	return "InterceptPoint(" + strconv.Itoa(int(p)) + ")"
}

// WithInterceptor returns a view of r whose outermost Runs consult i at
// every point of every attempt; it is intended for tests (see package
// txntest). Like a WithBegin view it shares everything else with r, keeps
// r's begin options, and joins r's transactions when nested in them (or
// the reverse), so a test can derive a faulty Runner from the very Runner
// its application built and pass it the same fn. A nil i returns a view
// without interceptor. A nil r returns nil.
func (r *Runner[T]) WithInterceptor(i Interceptor) *Runner[T] {
	if r == nil {
		return nil
	}
	v := *r
	v.intercept = i
	return &v
}
