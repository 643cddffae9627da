package txntest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/txnkit/txn"
)

// Recorder is a txn.Observer that keeps every event, so that a test can
// assert what a Run did: how many attempts, which retries with which
// classes, whether it committed or gave up. Give it to a Runner or a call
// with txn.WithObserver (combine it with your own through txn.Observers).
// The zero value is ready to use, and it is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	attempts []txn.AttemptEvent
	retries  []txn.RetryEvent
	giveUps  []txn.GiveUpEvent
	commits  []txn.CommitEvent
	admitted []txn.AdmissionEvent
	timeline []string
}

// AttemptStarted records e.
func (r *Recorder) AttemptStarted(_ context.Context, e txn.AttemptEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, e)
	r.timeline = append(r.timeline, fmt.Sprintf("attempt %d", e.Attempt))
}

// RetryScheduled records e.
func (r *Recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, e)
	r.timeline = append(r.timeline, fmt.Sprintf("retry %s", e.Class))
}

// GaveUp records e.
func (r *Recorder) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.giveUps = append(r.giveUps, e)
	r.timeline = append(r.timeline, fmt.Sprintf("gave up %s", e.Class))
}

// Committed records e.
func (r *Recorder) Committed(_ context.Context, e txn.CommitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits = append(r.commits, e)
	r.timeline = append(r.timeline, "committed")
}

// Admitted records e. Admission waits are left out of String, since they
// depend on timing.
func (r *Recorder) Admitted(_ context.Context, e txn.AdmissionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.admitted = append(r.admitted, e)
}

// Attempts returns the number of attempts started (executions of fn).
func (r *Recorder) Attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attempts)
}

// Retries returns the retries scheduled, in order.
func (r *Recorder) Retries() []txn.RetryEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.retries)
}

// Classes returns the class of each retry, in order.
func (r *Recorder) Classes() []txn.Class {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]txn.Class, len(r.retries))
	for i, e := range r.retries {
		out[i] = e.Class
	}
	return out
}

// Commits returns the number of successful outermost commits.
func (r *Recorder) Commits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.commits)
}

// GiveUps returns the give-ups (Runs that returned an error), in order.
func (r *Recorder) GiveUps() []txn.GiveUpEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.giveUps)
}

// Admissions returns the admission waits, in order.
func (r *Recorder) Admissions() []txn.AdmissionEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.admitted)
}

// Reset forgets every event recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts, r.retries, r.giveUps, r.commits, r.admitted, r.timeline = nil, nil, nil, nil, nil, nil
}

// String returns the events in order, without timings, such as
// "attempt 1, retry retryable, attempt 2, committed": a compact value to
// compare in assertions.
func (r *Recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.timeline, ", ")
}
