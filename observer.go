package txn

import (
	"context"
	"log/slog"
	"time"

	"github.com/txnkit/txn/internal/errchain"
)

// Observer receives what Run does. Its methods are called synchronously from
// the goroutine running Run, so they must be quick and safe for concurrent
// use. Embed NopObserver to implement only some of them.
type Observer interface {
	// AttemptStarted is called before each execution of fn, once its
	// transaction has begun. A try whose BEGIN failed is not an attempt
	// (fn did not run, GiveUpEvent and CommitEvent do not count it): it
	// shows only as the RetryScheduled or GaveUp event that follows it.
	AttemptStarted(ctx context.Context, e AttemptEvent)
	// RetryScheduled is called after a failed attempt (or commit, or
	// BEGIN), before the backoff sleep.
	RetryScheduled(ctx context.Context, e RetryEvent)
	// GaveUp is called when an outermost Run returns an error, also when
	// its context had ended before the first attempt (Attempts is then 0).
	// It is not called for a nested Run, nor for bad input (nil fn or
	// context, an invalid option, ErrForeignRunner), nor when fn panics or
	// exits its goroutine: the panic goes on to Run's caller, and the
	// observer has seen the attempt start but no end.
	GaveUp(ctx context.Context, e GiveUpEvent)
	// Committed is called after the outermost commit succeeded, before the
	// OnCommit callbacks run.
	Committed(ctx context.Context, e CommitEvent)
	// Admitted is called when an attempt had to queue for admission (the
	// adaptive concurrency limit or a conflict key held in the process),
	// once it is admitted. A wait for a key held in the database by
	// another process (DatabaseKeys) happens inside BEGIN, where it cannot
	// be told from the round trip: it is not reported, and delays the
	// attempt's AttemptStarted.
	Admitted(ctx context.Context, e AdmissionEvent)
}

// AttemptEvent describes an attempt about to start.
type AttemptEvent struct {
	// Operation is the call's Operation name, or "".
	Operation string
	// Attempt is 1 for the first execution of fn.
	Attempt int
	// Key is the call's conflict key, or "".
	Key string
}

// RetryEvent describes a retry about to be slept for.
type RetryEvent struct {
	// Operation is the call's Operation name, or "".
	Operation string
	// Attempt is the attempt that failed; after a BEGIN that failed, the
	// number of attempts made before it (0 when fn has not run yet).
	Attempt int
	// Class is how the error was classified (ClassRetryable,
	// ClassCommitRetryable, or ClassAmbiguous for an Idempotent call).
	Class Class
	// Delay is the backoff before the next attempt or commit.
	Delay time.Duration
	// Err is the error that caused the retry.
	Err error
}

// GiveUpEvent describes Run returning an error.
type GiveUpEvent struct {
	// Operation is the call's Operation name, or "".
	Operation string
	// Attempts is the number of times fn ran.
	Attempts int
	// Elapsed is the time since Run started.
	Elapsed time.Duration
	// Class is the class of the last error.
	Class Class
	// Err is the error Run returns.
	Err error
}

// CommitEvent describes a successful outermost commit.
type CommitEvent struct {
	// Operation is the call's Operation name, or "".
	Operation string
	// Attempts is the number of times fn ran.
	Attempts int
	// Elapsed is the time since Run started.
	Elapsed time.Duration
}

// AdmissionEvent describes a wait for admission.
type AdmissionEvent struct {
	// Operation is the call's Operation name, or "".
	Operation string
	// Wait is how long the attempt waited.
	Wait time.Duration
	// Limit is the adaptive concurrency limit when the attempt was admitted
	// (0 when adaptive control is off).
	Limit int
	// Queue is the number of attempts still waiting after this one.
	Queue int
	// Key is the first conflict key of the call when the wait was for a
	// key, or "".
	Key string
}

// NopObserver implements Observer with methods that do nothing. Embed it in
// an observer that needs only some events.
type NopObserver struct{}

// AttemptStarted does nothing.
func (NopObserver) AttemptStarted(context.Context, AttemptEvent) {}

// RetryScheduled does nothing.
func (NopObserver) RetryScheduled(context.Context, RetryEvent) {}

// GaveUp does nothing.
func (NopObserver) GaveUp(context.Context, GiveUpEvent) {}

// Committed does nothing.
func (NopObserver) Committed(context.Context, CommitEvent) {}

// Admitted does nothing.
func (NopObserver) Admitted(context.Context, AdmissionEvent) {}

// Observers returns an Observer that calls each of obs in order. Nil entries
// (nil pointers included) are skipped; with no non-nil entry it returns nil.
func Observers(obs ...Observer) Observer {
	var list multiObserver
	for _, o := range obs {
		if !errchain.IsNil(o) {
			list = append(list, o)
		}
	}
	switch len(list) {
	case 0:
		return nil
	case 1:
		return list[0]
	}
	return list
}

type multiObserver []Observer

func (m multiObserver) AttemptStarted(ctx context.Context, e AttemptEvent) {
	for _, o := range m {
		o.AttemptStarted(ctx, e)
	}
}

func (m multiObserver) RetryScheduled(ctx context.Context, e RetryEvent) {
	for _, o := range m {
		o.RetryScheduled(ctx, e)
	}
}

func (m multiObserver) GaveUp(ctx context.Context, e GiveUpEvent) {
	for _, o := range m {
		o.GaveUp(ctx, e)
	}
}

func (m multiObserver) Committed(ctx context.Context, e CommitEvent) {
	for _, o := range m {
		o.Committed(ctx, e)
	}
}

func (m multiObserver) Admitted(ctx context.Context, e AdmissionEvent) {
	for _, o := range m {
		o.Admitted(ctx, e)
	}
}

// SlogObserver returns an Observer that logs to l: retries at Info, give-ups
// at Warn, admission waits, attempts and commits at Debug. Events of a call
// named with Operation carry an "operation" attribute. A nil l logs to
// slog.Default(). An event below the logger's level costs no allocation, so
// with Debug off a Run that commits at once allocates nothing more.
func SlogObserver(l *slog.Logger) Observer {
	return slogObserver{l: l}
}

type slogObserver struct{ l *slog.Logger }

// op returns the operation attribute to append to attrs, if the call has a
// name.
func op(attrs []slog.Attr, name string) []slog.Attr {
	if name == "" {
		return attrs
	}
	return append(attrs, slog.String("operation", name))
}

func (s slogObserver) logger() *slog.Logger {
	if s.l == nil {
		return slog.Default()
	}
	return s.l
}

// enabled returns the logger and whether it logs at level, so that an
// event below the logger's level builds no attributes (with an operation
// name, they would be allocated).
func (s slogObserver) enabled(ctx context.Context, level slog.Level) (*slog.Logger, bool) {
	l := s.logger()
	return l, l.Enabled(ctx, level)
}

func (s slogObserver) AttemptStarted(ctx context.Context, e AttemptEvent) {
	l, ok := s.enabled(ctx, slog.LevelDebug)
	if !ok {
		return
	}
	l.LogAttrs(ctx, slog.LevelDebug, "txn attempt", op([]slog.Attr{
		slog.Int("attempt", e.Attempt), slog.String("key", e.Key)}, e.Operation)...)
}

func (s slogObserver) RetryScheduled(ctx context.Context, e RetryEvent) {
	l, ok := s.enabled(ctx, slog.LevelInfo)
	if !ok {
		return
	}
	l.LogAttrs(ctx, slog.LevelInfo, "txn retry", op([]slog.Attr{
		slog.Int("attempt", e.Attempt), slog.String("class", e.Class.String()),
		slog.Duration("delay", e.Delay), slog.Any("error", e.Err)}, e.Operation)...)
}

func (s slogObserver) GaveUp(ctx context.Context, e GiveUpEvent) {
	l, ok := s.enabled(ctx, slog.LevelWarn)
	if !ok {
		return
	}
	l.LogAttrs(ctx, slog.LevelWarn, "txn gave up", op([]slog.Attr{
		slog.Int("attempts", e.Attempts), slog.Duration("elapsed", e.Elapsed),
		slog.String("class", e.Class.String()), slog.Any("error", e.Err)}, e.Operation)...)
}

func (s slogObserver) Committed(ctx context.Context, e CommitEvent) {
	l, ok := s.enabled(ctx, slog.LevelDebug)
	if !ok {
		return
	}
	l.LogAttrs(ctx, slog.LevelDebug, "txn committed", op([]slog.Attr{
		slog.Int("attempts", e.Attempts), slog.Duration("elapsed", e.Elapsed)}, e.Operation)...)
}

func (s slogObserver) Admitted(ctx context.Context, e AdmissionEvent) {
	l, ok := s.enabled(ctx, slog.LevelDebug)
	if !ok {
		return
	}
	l.LogAttrs(ctx, slog.LevelDebug, "txn admitted", op([]slog.Attr{
		slog.Duration("wait", e.Wait), slog.Int("limit", e.Limit),
		slog.Int("queue", e.Queue), slog.String("key", e.Key)}, e.Operation)...)
}
