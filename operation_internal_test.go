package txn

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// opBackend is the smallest Backend: every transaction commits unless fn
// failed, and errors are classified by their Retry/Permanent marks only.
type opBackend struct{}

func (opBackend) Begin(context.Context, []BeginOption[int]) (int, error) { return 0, nil }
func (opBackend) Commit(context.Context, int) error                      { return nil }
func (opBackend) Rollback(context.Context, int) error                    { return nil }
func (opBackend) Classify(error) Class                                   { return ClassPermanent }

// opRecorder records the Operation of every event, by event kind.
type opRecorder struct {
	mu  sync.Mutex
	ops []string
}

func (o *opRecorder) add(kind, op string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, kind+" "+op)
}

func (o *opRecorder) AttemptStarted(_ context.Context, e AttemptEvent) { o.add("attempt", e.Operation) }
func (o *opRecorder) RetryScheduled(_ context.Context, e RetryEvent)   { o.add("retry", e.Operation) }
func (o *opRecorder) GaveUp(_ context.Context, e GiveUpEvent)          { o.add("gaveup", e.Operation) }
func (o *opRecorder) Committed(_ context.Context, e CommitEvent)       { o.add("commit", e.Operation) }
func (o *opRecorder) Admitted(_ context.Context, e AdmissionEvent)     { o.add("admitted", e.Operation) }

func (o *opRecorder) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.ops
	o.ops = nil
	return out
}

func TestOperationInEveryEvent(t *testing.T) {
	var logs bytes.Buffer
	rec := &opRecorder{}
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clk := queueClock{queued: make(chan struct{}, 1)}
	r := New[int](opBackend{}, WithClock(clk), WithObserver(Observers(rec, SlogObserver(logger))),
		Operation("runner-default"))
	require.NoError(t, r.Err())
	ctx := context.Background()
	lost := errors.New("lost a race")

	calls := 0
	err := r.Run(ctx, func(context.Context, int) error {
		calls++
		if calls == 1 {
			return Retry(lost)
		}
		return nil
	}, Operation("POST /transfer"))
	require.NoError(t, err)
	require.Equal(t, []string{"attempt POST /transfer", "retry POST /transfer", "attempt POST /transfer", "commit POST /transfer"},
		rec.take(), "events")

	// A permanent error and a limit both give up with the name.
	_ = r.Run(ctx, func(context.Context, int) error { return Permanent(lost) }, Operation("perm"))
	_ = r.Run(ctx, func(context.Context, int) error { return Retry(lost) }, Operation("limit"), MaxAttempts(1))
	require.Equal(t, []string{"attempt perm", "gaveup perm", "attempt limit", "gaveup limit"}, rec.take(), "events")

	// Without a per-call name the Runner's applies.
	_ = r.Run(ctx, func(context.Context, int) error { return nil })
	require.Equal(t, []string{"attempt runner-default", "commit runner-default"}, rec.take(), "events")

	// An admission wait for a conflict key carries the waiting call's name.
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 2)
	go func() {
		done <- r.Run(ctx, func(context.Context, int) error {
			close(holding)
			<-release
			return nil
		}, Keys("k"), Operation("holder"))
	}()
	<-holding
	go func() {
		done <- r.Run(ctx, func(context.Context, int) error { return nil }, Keys("k"), Operation("waiter"))
	}()
	// The waiter arms the key's stall timer as it queues: that is the
	// event that says it waits.
	<-clk.queued
	require.True(t, keyWaiting(r, "k"), "the second call waits for the key")
	close(release)
	for range 2 {
		require.NoError(t, <-done)
	}
	require.Contains(t, rec.take(), "admitted waiter", "an admission event named waiter")

	out := logs.String()
	for _, s := range []string{
		`msg="txn attempt" attempt=1 key="" operation="POST /transfer"`,
		`error="lost a race" operation="POST /transfer"`,
		`msg="txn committed" attempts=2 elapsed=0s operation="POST /transfer"`,
		`msg="txn gave up" attempts=1 elapsed=0s class=permanent error="lost a race" operation=perm`,
		`msg="txn admitted"`,
		`operation=waiter`,
	} {
		assert.Contains(t, out, s, "log lacks %s", s)
	}
}

// queueClock is durClock(0) whose stall timers report that they were armed:
// a key's stall timer is armed when a call starts to wait for the key. The
// timers never fire.
type queueClock struct {
	durClock
	queued chan struct{}
}

func (c queueClock) AfterFunc(time.Duration, func()) (stop func() bool) {
	select {
	case c.queued <- struct{}{}:
	default:
	}
	return func() bool { return true }
}

// keyWaiting reports whether a call waits for key k of r.
func keyWaiting(r *Runner[int], k string) bool {
	r.keys.mu.Lock()
	defer r.keys.mu.Unlock()
	e := r.keys.m[k]
	return e != nil && e.queue.len() > 0
}
