package integrationtest

import (
	"context"
	"sync"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/txntest"
)

// OpsRecorder is a txntest.Recorder that also keeps the Operation of every
// attempt, retry, give-up and commit event, in the order they came.
type OpsRecorder struct {
	txntest.Recorder
	mu  sync.Mutex
	ops []string
}

func (o *OpsRecorder) add(op string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, op)
}

// Take returns the operations kept so far and forgets them.
func (o *OpsRecorder) Take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ops := o.ops
	o.ops = nil
	return ops
}

// AttemptStarted keeps e's Operation and records the event.
func (o *OpsRecorder) AttemptStarted(ctx context.Context, e txn.AttemptEvent) {
	o.add(e.Operation)
	o.Recorder.AttemptStarted(ctx, e)
}

// RetryScheduled keeps e's Operation and records the event.
func (o *OpsRecorder) RetryScheduled(ctx context.Context, e txn.RetryEvent) {
	o.add(e.Operation)
	o.Recorder.RetryScheduled(ctx, e)
}

// GaveUp keeps e's Operation and records the event.
func (o *OpsRecorder) GaveUp(ctx context.Context, e txn.GiveUpEvent) {
	o.add(e.Operation)
	o.Recorder.GaveUp(ctx, e)
}

// Committed keeps e's Operation and records the event.
func (o *OpsRecorder) Committed(ctx context.Context, e txn.CommitEvent) {
	o.add(e.Operation)
	o.Recorder.Committed(ctx, e)
}
