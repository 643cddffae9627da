package mongotest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Defaults of the options.
const (
	defaultReplicaSet          = "rs0"
	defaultTransactionLifetime = 60 * time.Second
	sessionTimeoutMinutes      = 30
	maxWireVersion             = 21 // MongoDB 7.0
)

// config holds the settings chosen with Options.
type config struct {
	replicaSet  string
	txnLifetime time.Duration
	host        string
}

// Option configures a Server.
type Option func(*config)

// WithReplicaSet sets the replica set name the server reports in hello and
// puts in URI. The default is "rs0".
func WithReplicaSet(name string) Option {
	return func(c *config) { c.replicaSet = name }
}

// WithTransactionLifetime sets how long a transaction may stay open before
// the server aborts it, like MongoDB's transactionLifetimeLimitSeconds. The
// default is 60 seconds.
func WithTransactionLifetime(d time.Duration) Option {
	return func(c *config) { c.txnLifetime = d }
}

// WithHost sets the host:port the server names as its own address in
// hello (hosts, primary, me) and in URI; the default is Addr. A driver that
// discovers the replica set connects to that address, so a test can put a
// proxy there that forwards to Addr and have every connection of the
// driver pass through it.
func WithHost(hostport string) Option {
	return func(c *config) { c.host = hostport }
}

// Server is a MongoDB wire-protocol server on the loopback interface that
// presents itself as the primary of a one-member replica set. It keeps its
// data in memory, runs multi-document transactions with snapshot isolation,
// scripts faults like MongoDB's failCommand fail point and logs every
// command it receives. All methods are safe for concurrent use.
type Server struct {
	cfg        config
	ln         net.Listener
	addr       string
	host       string // the address hello and URI name
	electionID bson.ObjectID
	started    time.Time

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	requestID atomic.Int32

	connMu     sync.Mutex
	conns      map[*conn]struct{}
	nextConnID int64
	closed     bool

	// mu guards eng.
	mu  sync.Mutex
	eng *engine

	fpMu sync.Mutex
	fp   *failState

	logMu   sync.Mutex
	log     []Command
	logBase int
}

// conn is one client connection. Its fields are used only by the goroutine
// serving it.
type conn struct {
	id      int64
	nc      net.Conn
	appName string
}

// Start starts a Server listening on 127.0.0.1 at a free port. It fails
// when the listener cannot be created or an option is invalid. Stop it with
// Close.
func Start(opts ...Option) (*Server, error) {
	cfg := config{replicaSet: defaultReplicaSet, txnLifetime: defaultTransactionLifetime}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.replicaSet == "" {
		return nil, errors.New("mongotest: empty replica set name")
	}
	if cfg.txnLifetime <= 0 {
		return nil, fmt.Errorf("mongotest: transaction lifetime %v is not positive", cfg.txnLifetime)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mongotest: listen: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		ln:         ln,
		addr:       ln.Addr().String(),
		host:       cfg.host,
		electionID: bson.NewObjectID(),
		started:    time.Now(),
		done:       make(chan struct{}),
		conns:      map[*conn]struct{}{},
		eng:        newEngine(),
	}
	if s.host == "" {
		s.host = s.addr
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// New starts a Server for a test and registers its Close with tb.Cleanup.
// It stops the test with tb.Fatal when the server cannot start.
func New(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := Start(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// URI returns a connection string for the real driver: the replica set
// name, directConnection=false, so that the driver discovers a replica set
// and allows transactions, and serverSelectionTimeoutMS=5000, so that a
// stopped server fails a test quickly. Its host is the one set by
// WithHost, Addr by default.
func (s *Server) URI() string {
	q := url.Values{}
	q.Set("replicaSet", s.cfg.replicaSet)
	q.Set("directConnection", "false")
	q.Set("serverSelectionTimeoutMS", "5000")
	return "mongodb://" + s.host + "/?" + q.Encode()
}

// Close stops the listener, closes every connection, stops commands that
// wait for a lock or a fail point, and returns when every goroutine of the
// server has ended. It may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.ln.Close()
		s.connMu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.nc.Close()
		}
		s.connMu.Unlock()
	})
	s.wg.Wait()
}

// DropConnections closes every client connection at once, as a network
// failure would, and returns how many it closed. The server keeps
// accepting new connections.
func (s *Server) DropConnections() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
	return len(s.conns)
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.connMu.Lock()
		if s.closed {
			s.connMu.Unlock()
			_ = nc.Close()
			return
		}
		s.nextConnID++
		c := &conn{id: s.nextConnID, nc: nc}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.connMu.Unlock()
		go s.serve(c)
	}
}

// serve reads requests from c and answers them one at a time until the
// client hangs up, a fail point closes the connection, or the server stops.
func (s *Server) serve(c *conn) {
	defer s.wg.Done()
	defer func() {
		_ = c.nc.Close()
		s.connMu.Lock()
		delete(s.conns, c)
		s.connMu.Unlock()
	}()
	for {
		h, body, err := readMessage(c.nc)
		if err != nil {
			return
		}
		var out []byte
		switch h.opCode {
		case opMsg:
			flags, cmd, err := parseOpMsg(body)
			if err != nil {
				return
			}
			reply, hangup := s.execute(c, cmd, "", false)
			if hangup {
				return
			}
			if flags&msgMoreToCome != 0 {
				continue
			}
			out = buildOpMsg(s.requestID.Add(1), h.requestID, reply)
		case opQuery:
			db, cmd, err := parseOpQuery(body)
			if err != nil {
				return
			}
			reply, hangup := s.execute(c, cmd, db, true)
			if hangup {
				return
			}
			out = buildOpReply(s.requestID.Add(1), h.requestID, reply)
		default:
			return
		}
		if _, err := c.nc.Write(out); err != nil {
			return
		}
	}
}

// sleep waits for d or until the server stops, and reports whether the
// server is still running.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}
