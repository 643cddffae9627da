package txnsql

import (
	"context"
	"testing"
	"time"
)

// TestMayOutlast: a BEGIN that waits on its own for up to BeginWait is run
// apart (BoundBegin) only when it may outlast the context's deadline, or
// when BeginWait is not known.
func TestMayOutlast(t *testing.T) {
	soon, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	late, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	noDeadline, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	for _, c := range []struct {
		name string
		wait time.Duration
		ctx  context.Context
		want bool
	}{
		{"unknown wait, no deadline", -1, noDeadline, true},
		{"unknown wait, late deadline", -1, late, true},
		{"deadline before the wait", 5 * time.Second, soon, true},
		{"deadline after the wait", 5 * time.Second, late, false},
		{"no deadline", 5 * time.Second, noDeadline, false},
		{"no wait at all", 0, soon, false},
	} {
		d := Driver{BoundBegin: true, BeginWait: c.wait}
		if got := d.mayOutlast(c.ctx); got != c.want {
			t.Errorf("%s: mayOutlast = %v, want %v", c.name, got, c.want)
		}
	}
}
