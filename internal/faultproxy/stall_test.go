package faultproxy

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestStallWithholdsUntilRelease: the chunk that completes the pattern,
// and what follows it, reach the server only after Release, in order.
func TestStallWithholdsUntilRelease(t *testing.T) {
	s := newEchoServer(t)
	p := startProxy(t, s.ln.Addr().String())
	c := dial(t, p)
	roundTrip(t, c, "hello ")
	p.Arm([]byte("COMMIT"), Stall)
	_, err := c.Write([]byte("commit;"))
	assert.NoError(t, err)
	waitFired(t, p)
	_, err = c.Write([]byte("after;"))
	assert.NoError(t, err)
	assert.Equal(t, "hello ", s.received(), "nothing relayed while stalled")
	p.Release()
	s.waitReceived(t, "hello commit;after;")
	got := make([]byte, len("commit;after;"))
	_, err = io.ReadFull(c, got)
	assert.NoError(t, err)
	assert.Equal(t, "commit;after;", string(got), "the echo comes back once released")
	p.Release() // a second call does nothing
	assert.Equal(t, 1, p.Fires())
}
