package faultproxy

import (
	"bytes"
	"math/rand/v2"
	"time"
)

// Chaos makes the proxy inject faults at random, on every connection, for
// soak tests of a workload: each probability is drawn independently, from
// a generator seeded with Seed, for each accepted connection or each chunk
// a client sends. COMMIT and ROLLBACK are recognised by those words in the
// chunk (case-insensitive), unless it also says BEGIN: a chunk that begins
// a transaction (such as one that ends an implicit transaction and begins
// another) is a statement, whose cut leaves nothing committed. Every other
// chunk, the connection handshake included, is a statement. Armed
// one-shot faults (Arm) take precedence.
type Chaos struct {
	// Seed seeds the generator of the draws.
	Seed uint64
	// Connect is the probability that an accepted connection is closed at
	// once, before the server is dialled: the client's connect fails.
	Connect float64
	// Statement is the probability that a statement chunk cuts the
	// connection, half the time before forwarding it (the server never
	// sees it), half the time after the server's reply (withheld).
	Statement float64
	// Commit is the probability that a COMMIT cuts the connection, half the
	// time before forwarding it (nothing committed), half the time after
	// the server's reply (committed, the client never learns it).
	Commit float64
	// StatementStall, CommitStall and RollbackStall are the probabilities
	// that such a chunk makes the connection go silent: nothing more is
	// relayed either way, while the connection stays open. Half the time
	// the chunk itself is withheld, half the time it reaches the server and
	// its reply is withheld.
	StatementStall, CommitStall, RollbackStall float64
	// StallFor, when positive, cuts a silent connection after that long;
	// otherwise it stays silent until the client closes it or the proxy is
	// closed.
	StallFor time.Duration
}

// ChaosStats counts the faults Chaos injected.
type ChaosStats struct {
	// ConnectCuts counts connections closed before the server was dialled.
	ConnectCuts int
	// StatementCuts and CommitCuts count cut connections, by the chunk
	// that triggered them.
	StatementCuts, CommitCuts int
	// CommitsCutAfterReply counts the COMMITs the server received and
	// answered, whose reply was withheld (a subset of CommitCuts).
	CommitsCutAfterReply int
	// StatementStalls, CommitStalls and RollbackStalls count connections
	// that went silent, by the chunk that triggered it.
	StatementStalls, CommitStalls, RollbackStalls int
}

// action is what chaos does to one chunk.
type action int

const (
	pass action = iota
	cutBefore
	cutAfter
	stallBefore
	stallAfter
)

// SetChaos turns random fault injection on with c, replacing any earlier
// setting and resetting ChaosStats; the zero Chaos turns it off.
func (p *Proxy) SetChaos(c Chaos) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chaos = c
	p.chaosRand = rand.New(rand.NewPCG(c.Seed, c.Seed^0x5851f42d4c957f2d))
	p.chaosStats = ChaosStats{}
}

// ChaosStats returns the faults injected since the last SetChaos.
func (p *Proxy) ChaosStats() ChaosStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chaosStats
}

// chaosConnect draws whether an accepted connection is closed at once.
func (p *Proxy) chaosConnect() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.chaosRand == nil || !(p.chaosRand.Float64() < p.chaos.Connect) {
		return false
	}
	p.chaosStats.ConnectCuts++
	return true
}

var (
	wordCommit   = []byte("commit")
	wordRollback = []byte("rollback")
	wordBegin    = []byte("begin")
)

// chaosChunk draws what happens to a chunk (lower-cased) a client sent.
func (p *Proxy) chaosChunk(lower []byte) (action, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.chaosRand == nil {
		return pass, 0
	}
	c, rnd, s := &p.chaos, p.chaosRand, &p.chaosStats
	half := func(before, after action) action {
		if rnd.IntN(2) == 0 {
			return before
		}
		return after
	}
	begins := bytes.Contains(lower, wordBegin)
	switch {
	case !begins && bytes.Contains(lower, wordRollback):
		if rnd.Float64() < c.RollbackStall {
			s.RollbackStalls++
			return half(stallBefore, stallAfter), c.StallFor
		}
	case !begins && bytes.Contains(lower, wordCommit):
		if rnd.Float64() < c.Commit {
			s.CommitCuts++
			a := half(cutBefore, cutAfter)
			if a == cutAfter {
				s.CommitsCutAfterReply++
			}
			return a, 0
		}
		if rnd.Float64() < c.CommitStall {
			s.CommitStalls++
			return half(stallBefore, stallAfter), c.StallFor
		}
	default:
		if rnd.Float64() < c.Statement {
			s.StatementCuts++
			return half(cutBefore, cutAfter), 0
		}
		if rnd.Float64() < c.StatementStall {
			s.StatementStalls++
			return half(stallBefore, stallAfter), c.StallFor
		}
	}
	return pass, 0
}
