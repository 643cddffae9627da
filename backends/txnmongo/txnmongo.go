// Package txnmongo runs txn transactions on MongoDB replica sets (and
// sharded clusters) through the official Go driver, go.mongodb.org/mongo-driver/v2.
//
// A Runner is built once over a *mongo.Client and shared:
//
//	client, _ := mongo.Connect(options.Client().ApplyURI(uri))
//	r := txnmongo.New(client, txn.MaxAttempts(10))
//	err := r.Run(ctx, func(ctx context.Context, sess *mongo.Session) error {
//		accounts := client.Database("bank").Collection("accounts")
//		if _, err := accounts.UpdateOne(ctx, bson.M{"_id": from}, bson.M{"$inc": bson.M{"balance": -amt}}); err != nil {
//			return err
//		}
//		_, err := accounts.UpdateOne(ctx, bson.M{"_id": to}, bson.M{"$inc": bson.M{"balance": amt}})
//		return err
//	})
//
// Every attempt starts a session of its own (client.StartSession) and a
// transaction on it. fn receives a context bound to that session
// (mongo.NewSessionContext): every operation given that context is part of
// the transaction, and an operation given another context is not. An
// attempt that does not commit ends its session as it ends, so a context
// or session that fn kept (a goroutine it left running, say) fails every
// operation ("ended session was used") instead of reaching a later
// attempt's transaction or writing outside any; the committed attempt's
// session ends when Run returns. fn must
// return the errors of its operations: an operation that fails for real
// makes the server abort the transaction, and a fn that drops the error
// sees its commit fail with NoSuchTransaction and runs again, up to the
// Runner's attempt limit; an error raised before the operation reached the
// transaction leaves it open, and dropping it commits a partial
// transaction. fn must not commit, abort or end the session: Run then ends
// with an error matching txn.ErrFnFinishedTx, whatever fn returns, and does
// not run fn again.
//
// The Runner drives StartTransaction, CommitTransaction and
// AbortTransaction itself instead of calling Session.WithTransaction, so
// the Runner's backoff, limits, retry budget and observers apply and an
// attempt is counted once. Errors are classified by their labels (see
// Classify): TransientTransactionError re-runs fn in a new transaction,
// UnknownTransactionCommitResult re-sends only commitTransaction (the
// driver upgrades its write concern to majority), and a commit that failed
// with MaxTimeMSExpired makes Run return an error matching
// txn.ErrCommitUnknown. So does a commit re-send that reaches no server
// after a commit whose outcome was unknown: the driver leaves that error
// unlabelled, and the transaction may have committed.
//
// MongoDB has no savepoints: a Run nested in fn joins the outer transaction
// outright, and txn.Savepoint returns txn.ErrSavepointUnsupported.
//
// The driver retries a commitTransaction that failed with a retryable
// error itself: once, or, when the context has a deadline, until the
// deadline. txnmongo therefore sends commitTransaction under a context that
// keeps the caller's values and cancellation but not its deadline, so the
// driver retries once and further commit retries are the Runner's, visible
// to its observers and bounded by its limits; Run still stops at the
// deadline. A client configured with a Timeout (timeoutMS) makes the driver
// retry until that timeout regardless.
package txnmongo

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/errchain"
)

// Runner is the Runner type this package builds. fn receives the Run's
// *mongo.Session; the context it receives is already bound to it.
type Runner = txn.Runner[*mongo.Session]

// New returns a Runner over client that classifies errors with Classify.
// Transactions default to primary read preference and majority write
// concern; the read concern is the client's unless TxOptions, given to
// Runner.WithBegin, sets one. txn.WithClassifier replaces Classify. A nil
// client yields a Runner whose Run returns txn.ErrNilRunner.
func New(client *mongo.Client, opts ...txn.RunnerOption) *Runner {
	if client == nil {
		return txn.New[*mongo.Session](nil, opts...)
	}
	return txn.New[*mongo.Session](&backend{client: client}, opts...)
}

// TxOptions returns a begin option that sets the transaction options (read
// concern, write concern, read preference); give it to Runner.WithBegin:
//
//	r.WithBegin(txnmongo.TxOptions(options.Transaction().SetReadConcern(readconcern.Snapshot())))
//
// Fields it leaves unset keep the defaults: primary read preference and
// majority write concern.
func TxOptions(opts ...options.Lister[options.TransactionOptions]) txn.BeginOption[*mongo.Session] {
	return txn.NewBeginOption[*mongo.Session](backendName, txOptions(opts))
}

// backendName marks this package's begin options.
const backendName = "txnmongo"

// txOptions is what TxOptions passes to Begin.
type txOptions []options.Lister[options.TransactionOptions]

// defaultTxOptions are applied before the caller's options.
func defaultTxOptions() *options.TransactionOptionsBuilder {
	return options.Transaction().
		SetReadPreference(readpref.Primary()).
		SetWriteConcern(writeconcern.Majority())
}

// runState is what the backend keeps for one outermost Run. It is used only
// by the goroutine running that Run.
type runState struct {
	// sess is the current attempt's session, nil before the first.
	sess *mongo.Session
	// committing is true once Commit sent commitTransaction for the
	// current transaction: the session then reports no running
	// transaction, yet the commit may be sent again.
	committing bool
	// unknown is true once a commitTransaction of the current
	// transaction failed with an unknown outcome
	// (UnknownTransactionCommitResult): the transaction may have
	// committed, so a later re-send that reaches no server cannot say it
	// did not.
	unknown bool
	// timedOut is true when the last commitTransaction failed with an
	// error the driver treats as a timeout. The driver then returns
	// before it clears the session's "committing" mark, which only an
	// abort of a running transaction clears.
	timedOut bool
}

// runKey is the context key of the runState.
type runKey struct{}

// backend adapts a *mongo.Client to txn.Backend and txn.RunScoper.
type backend struct {
	client *mongo.Client
}

var (
	_ txn.Backend[*mongo.Session]       = (*backend)(nil)
	_ txn.RunScoper                     = (*backend)(nil)
	_ txn.AttemptScoper[*mongo.Session] = (*backend)(nil)
)

// StartRun starts the state of one outermost Run, which the scoped context
// carries for Begin, Commit and Rollback. end ends the session of the last
// attempt on a context detached from the caller's cancellation; the driver
// aborts a transaction the session still has open.
func (b *backend) StartRun(ctx context.Context) (context.Context, func(), error) {
	st := &runState{}
	end := func() { st.endSession(ctx) }
	return context.WithValue(ctx, runKey{}, st), end, nil
}

// AttemptContext binds ctx to the attempt's session, for fn.
func (b *backend) AttemptContext(ctx context.Context, sess *mongo.Session) context.Context {
	return mongo.NewSessionContext(ctx, sess)
}

// endSession ends the current attempt's session, if there is one, and
// forgets it.
func (st *runState) endSession(ctx context.Context) {
	if st.sess == nil {
		return
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
	defer cancel()
	st.sess.EndSession(ectx)
	st.sess = nil
}

// stateOf returns the runState that StartRun put in ctx.
func stateOf(ctx context.Context) (*runState, error) {
	st, ok := ctx.Value(runKey{}).(*runState)
	if !ok {
		return nil, errors.New("txnmongo: context does not carry a Run's state")
	}
	return st, nil
}

// Begin ends the previous attempt's session, if any (the driver aborts a
// transaction it still has open: on a replica set an abort cannot undo a
// commit that did happen, and it releases the locks of one that did not),
// starts the attempt's session and a transaction on it, with the default
// options overlaid by those of TxOptions. Neither contacts a server: the
// transaction starts with fn's first operation. After a commit re-send
// that timed out (in server selection: the server is gone, and the first
// commit's outcome is unknown), Begin returns a permanent error matching
// txn.ErrCommitUnknown instead: the driver still marks the session that
// sent it as committing, and fn is not run again on a deployment it cannot
// reach.
func (b *backend) Begin(ctx context.Context, opts []txn.BeginOption[*mongo.Session]) (*mongo.Session, error) {
	st, err := stateOf(ctx)
	if err != nil {
		return nil, err
	}
	list := []options.Lister[options.TransactionOptions]{defaultTxOptions()}
	for _, opt := range opts {
		v, ok := opt.Value().(txOptions)
		if opt.Backend() != backendName || !ok {
			return nil, fmt.Errorf("%w: a begin option built by %s (carrying %T) was given to a txnmongo Runner; use txnmongo.TxOptions",
				txn.ErrBadOption, opt.Backend(), opt.Value())
		}
		list = append(list, v...)
	}
	if st.timedOut && st.sess != nil && !st.sess.TransactionRunning() {
		return nil, &commitError{class: txn.ClassPermanent, err: fmt.Errorf(
			"txnmongo: not running fn again after a commit re-send that timed out; the driver still marks as committing the session that sent it: %w",
			txn.ErrCommitUnknown)}
	}
	st.endSession(ctx)
	sess, err := b.client.StartSession()
	if err != nil {
		return nil, fmt.Errorf("txnmongo: start session: %w", err)
	}
	st.sess = sess
	if err := sess.StartTransaction(list...); err != nil {
		return nil, fmt.Errorf("txnmongo: start transaction: %w", err)
	}
	st.committing, st.unknown, st.timedOut = false, false, false
	return sess, nil
}

// Commit sends commitTransaction, or sends it again after a
// commit-retryable failure. It returns an error wrapping txn.ErrTxDone when
// fn committed, aborted or ended the session itself, and, when the context
// ended before the first commit was sent, aborts the transaction and
// returns an error wrapping the context's cause. The command runs without
// the context's deadline (see the package documentation) but is still
// cancelled when the context ends. A failed commit is returned as a
// *commitError that carries its class (see commitFailed).
func (b *backend) Commit(ctx context.Context, sess *mongo.Session) error {
	st, err := stateOf(ctx)
	if err != nil {
		return err
	}
	if !st.committing && !sess.TransactionRunning() {
		return fmt.Errorf("%w: the session's transaction was committed or aborted inside fn", txn.ErrTxDone)
	}
	if !st.committing && ctx.Err() != nil {
		// The driver would not send the commit; abort now, on a context
		// the cancellation does not reach, so that the server releases
		// the transaction's locks instead of holding them until
		// transactionLifetimeLimitSeconds. Nothing was committed.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txn.DefaultRollbackTimeout)
		_ = sess.AbortTransaction(actx)
		cancel()
		return fmt.Errorf("txnmongo: commit not sent, transaction aborted: %w", context.Cause(ctx))
	}
	st.committing = true
	cctx, cancel := withoutDeadline(ctx)
	defer cancel()
	err = sess.CommitTransaction(cctx)
	if err == nil {
		return nil
	}
	ce := st.commitFailed(err)
	if ce.class == txn.ClassRetryable || ce.class == txn.ClassPermanent {
		// Nothing was committed and nothing will be sent again on this
		// session: end it now, so that fn's context stops working before
		// the backoff and the next attempt.
		st.endSession(ctx)
	}
	return ce
}

// commitFailed classifies an error of the Runner's commitTransaction and
// wraps it in a *commitError.
//
// An error that carries a server answer or a transaction label keeps the
// class Classify gives it. One that carries neither (a server selection
// failure, a connection that could not be opened, the context ending
// while no server was reachable) is one the driver should have labelled
// UnknownTransactionCommitResult but does not (v2.8.2 labels server
// selection errors only outside a commit), so Commit decides: when no
// commit of this transaction can have reached a server, and the error
// shows that this one did not either, nothing was committed and the
// transaction is lost (retryable); when an earlier commit's outcome was
// unknown, a re-send that reached no server leaves it unknown (ambiguous:
// Run returns txn.ErrCommitUnknown); any other such error is ambiguous
// too.
func (st *runState) commitFailed(err error) *commitError {
	st.timedOut = mongo.IsTimeout(err)
	switch {
	case isCode(err, codeNoSuchTransaction):
		return &commitError{err: err, class: Classify(err), context: "txnmongo: commit: the server had already aborted the transaction " +
			"(an operation in fn failed and fn did not return its error, or the transaction " +
			"outlived transactionLifetimeLimitSeconds)"}
	case hasLabel(err, labelUnknownCommit):
		st.unknown = true
		return &commitError{err: err, class: Classify(err)}
	case answered(err) || hasLabel(err, labelTransient):
		return &commitError{err: err, class: Classify(err)}
	case st.unknown:
		return &commitError{err: err, class: txn.ClassAmbiguous, context: "txnmongo: commit: re-sending commitTransaction reached no server " +
			"after an earlier commitTransaction whose outcome is unknown"}
	case notSent(err):
		return &commitError{err: err, class: txn.ClassRetryable, context: "txnmongo: commit: commitTransaction reached no server, nothing was committed"}
	}
	return &commitError{err: err, class: txn.ClassAmbiguous, context: "txnmongo: commit: commitTransaction failed without an answer from the server"}
}

// commitError is an error of the Runner's own commitTransaction, with the
// class Commit decided for it. It unwraps to the driver's error.
type commitError struct {
	err     error
	class   txn.Class
	context string // said before the driver's message, "" for nothing
}

func (e *commitError) Error() string {
	if e.context == "" {
		return e.err.Error()
	}
	return e.context + ": " + e.err.Error()
}

func (e *commitError) Unwrap() error { return e.err }

// Rollback sends abortTransaction. Run calls it with a context detached
// from the caller's cancellation and bounded by txn.RollbackTimeout. The
// driver ignores the server's answer. Rollback returns an error wrapping
// txn.ErrTxDone, without sending anything, when the session has no
// running transaction: fn committed or aborted it, or ended the session.
// Either way it then ends the attempt's session.
func (b *backend) Rollback(ctx context.Context, sess *mongo.Session) error {
	// The attempt is over: its session ends with it.
	defer sess.EndSession(ctx)
	if !sess.TransactionRunning() {
		return fmt.Errorf("%w: fn committed or aborted the session's transaction, or ended the session", txn.ErrTxDone)
	}
	if err := sess.AbortTransaction(ctx); err != nil {
		return fmt.Errorf("%w: %w", txn.ErrTxDone, err)
	}
	return nil
}

// Classify implements txn.Backend: the package's Classify, except for an
// error labelled UnknownTransactionCommitResult that did not come from
// the Runner's commit. The driver adds that label only to
// commitTransaction, so fn sent one itself: its transaction is finished
// whatever the outcome, and running fn again could apply its writes
// twice. Such an error is permanent. (When the session shows that fn
// ended the transaction, Rollback has already reported it.)
func (b *backend) Classify(err error) txn.Class {
	if _, ok := errchain.As[*commitError](err); !ok && hasLabel(err, labelUnknownCommit) {
		return txn.ClassPermanent
	}
	return Classify(err)
}

// Unreachable implements txn.UnreachableClassifier: a server selection
// error means that the driver found no server to send fn's operation to,
// after waiting for one as long as serverSelectionTimeout allows, so Run
// returns at once instead of selecting again.
func (b *backend) Unreachable(err error) bool {
	var se topology.ServerSelectionError
	return errors.As(err, &se)
}

// withoutDeadline returns a context with ctx's values that is cancelled,
// with ctx's cause, when ctx ends, but has no deadline, so that the driver
// retries a failed command once instead of until the deadline.
func withoutDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok {
		return ctx, func() {}
	}
	c, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	return c, func() {
		stop()
		cancel(context.Canceled)
	}
}
