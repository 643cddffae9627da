package txngorm

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestWithDeadlineOf: GORM's Begin sees the caller's deadline (so that
// DefaultTransactionTimeout applies exactly when it did before the begin
// context was detached), while cancellation comes from the begin context
// only.
func TestWithDeadlineOf(t *testing.T) {
	at := time.Now().Add(time.Hour)
	caller, cancelCaller := context.WithDeadline(context.Background(), at)
	bctx, cancelBegin := context.WithCancel(context.WithoutCancel(caller))
	defer cancelBegin()

	c := withDeadlineOf(bctx, caller)
	d, ok := c.Deadline()
	assert.True(t, ok)
	assert.Equal(t, at, d)
	cancelCaller()
	assert.NoError(t, c.Err(), "the caller's end does not reach it")
	cancelBegin()
	assert.ErrorIs(t, c.Err(), context.Canceled)

	_, ok = withDeadlineOf(bctx, context.Background()).Deadline()
	assert.False(t, ok, "no deadline when the caller has none")
}
