package faultproxy

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChaosConnectCut(t *testing.T) {
	s, p := echoBehindProxy(t)
	p.SetChaos(Chaos{Seed: 1, Connect: 1})
	expectClosed(t, dial(t, p))
	assert.Equal(t, ChaosStats{ConnectCuts: 1}, p.ChaosStats())
	p.SetChaos(Chaos{})
	roundTrip(t, dial(t, p), "hello")
	assert.Equal(t, "hello", s.received())
}

// TestChaosCuts: every statement or COMMIT cuts the connection, before the
// server sees it or after it answered; the echo server's log tells which.
// A chunk that begins a transaction is a statement, whatever else it says.
func TestChaosCuts(t *testing.T) {
	for _, msg := range []string{"select 1;", "COMMIT;", "SELECT pg_advisory_lock(1); COMMIT; BEGIN;"} {
		s, p := echoBehindProxy(t)
		p.SetChaos(Chaos{Seed: 7, Statement: 1, Commit: 1})
		reached := 0
		const n = 20
		for i := 0; i < n; i++ {
			c := dial(t, p)
			_, err := c.Write([]byte(msg))
			require.NoError(t, err)
			expectClosed(t, c)
			if strings.Count(s.received(), msg) > reached {
				reached++
			}
		}
		st := p.ChaosStats()
		if msg == "COMMIT;" {
			assert.Equal(t, n, st.CommitCuts)
			assert.Equal(t, reached, st.CommitsCutAfterReply, "the COMMITs cut after the reply reached the server")
		} else {
			assert.Equal(t, n, st.StatementCuts)
		}
		assert.Positive(t, reached, "some reached the server")
		assert.Less(t, reached, n, "some did not")
	}
}

// TestChaosStall: a stalled connection relays nothing either way until
// StallFor cuts it; a ROLLBACK stalls only when RollbackStall says so.
func TestChaosStall(t *testing.T) {
	s, p := echoBehindProxy(t)
	c := dial(t, p)
	roundTrip(t, c, "begin;")
	p.SetChaos(Chaos{Seed: 3, RollbackStall: 1, StallFor: 50 * time.Millisecond})
	roundTrip(t, c, "select 1;")
	_, err := c.Write([]byte("rollback;"))
	require.NoError(t, err)
	expectClosed(t, c)
	assert.Equal(t, ChaosStats{RollbackStalls: 1}, p.ChaosStats())
	assert.NotContains(t, strings.TrimPrefix(s.received(), "begin;select 1;"), "select", "nothing relayed after the stall")
}
