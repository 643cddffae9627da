package txnmongo_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"

	"github.com/txnkit/txn"
	"github.com/txnkit/txn/internal/fakeclock"
	"github.com/txnkit/txn/internal/mongotest"
)

// uriVar names the environment variable with the URI of a real replica
// set. The server must run with enableTestCommands=1 for the fail points.
const uriVar = "TXN_MONGODB_URI"

// waitLimit bounds every wait in these tests so that a bug fails a test
// instead of hanging it. It is not a speed assertion.
const waitLimit = 60 * time.Second

// env is one server a scenario runs against: the project's wire-protocol
// test server, or a real replica set from TXN_MONGODB_URI. Each test gets
// its own database, and its own application name that restricts its fail
// points to the Runner's client.
type env struct {
	name   string
	srv    *mongotest.Server // nil on a real server
	uri    string
	db     string
	app    string
	client *mongo.Client // the Runner's client: appName app, monitored
	admin  *mongo.Client // set-up, checks and fail points
	mon    *monitor
}

// eachServer runs scenario against mongotest and, when TXN_MONGODB_URI is
// set, against that replica set; without it the "replset" subtest is
// skipped with a message. TXN_REQUIRE_DBS does not make it required: CI
// has no MongoDB server.
func eachServer(t *testing.T, scenario func(t *testing.T, e *env)) {
	t.Run("mongotest", func(t *testing.T) {
		srv := mongotest.New(t)
		scenario(t, newEnv(t, "mongotest", srv, srv.URI()))
	})
	t.Run("replset", func(t *testing.T) {
		uri := os.Getenv(uriVar)
		if uri == "" {
			t.Skipf("no real MongoDB: set %s to a replica set started with enableTestCommands=1 to run this scenario against it", uriVar)
		}
		scenario(t, newEnv(t, "replset", nil, uri))
	})
}

// newEnv connects the two clients of a test and drops its database at the
// end.
func newEnv(t *testing.T, name string, srv *mongotest.Server, uri string) *env {
	t.Helper()
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	e := &env{name: name, srv: srv, uri: uri, db: "txnmongo_" + suffix, app: "txnmongo-test-" + suffix, mon: &monitor{}}
	e.admin = connect(t, uri, options.Client().SetAppName("txnmongo-admin"))
	e.client = e.newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.admin.Ping(ctx, nil), "%s at %s", name, uri)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.admin.Database(e.db).Drop(ctx)
	})
	return e
}

// newClient returns another client like the Runner's, configured further
// by opts: its fail points and command log are the test's.
func (e *env) newClient(t *testing.T, opts ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	base := options.Client().SetAppName(e.app).SetMonitor(e.mon.commandMonitor())
	return connect(t, e.uri, append([]*options.ClientOptions{base}, opts...)...)
}

// connect returns a client disconnected when the test ends.
func connect(t *testing.T, uri string, opts ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	all := append([]*options.ClientOptions{options.Client().ApplyURI(uri)}, opts...)
	client, err := mongo.Connect(all...)
	require.NoError(t, err, "connect %s", uri)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	})
	return client
}

// ctx returns a context cancelled after waitLimit. It has no deadline on
// purpose: under a deadline the driver retries retryable errors of
// commitTransaction and abortTransaction until the deadline instead of
// once, and the tests count the commands sent.
func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	timer := time.AfterFunc(waitLimit, cancel)
	t.Cleanup(func() {
		timer.Stop()
		cancel()
	})
	return ctx
}

// coll is collection name of the test's database, on the Runner's client.
func (e *env) coll(name string) *mongo.Collection {
	return e.client.Database(e.db).Collection(name)
}

// insert writes documents outside any transaction, through the admin
// client.
func (e *env) insert(t *testing.T, coll string, docs ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.admin.Database(e.db).Collection(coll).InsertMany(ctx, docs)
	require.NoError(t, err, "insert into %s", coll)
}

// find returns the committed documents of coll matching filter, sorted by
// _id, read through the admin client.
func (e *env) find(t *testing.T, coll string, filter any) []bson.M {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := e.admin.Database(e.db).Collection(coll).Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	require.NoError(t, err, "find in %s", coll)
	var out []bson.M
	require.NoError(t, cur.All(ctx, &out), "find in %s", coll)
	return out
}

// intField reads a numeric field of a document.
func intField(t *testing.T, d bson.M, key string) int64 {
	t.Helper()
	switch v := d[key].(type) {
	case int32:
		return int64(v)
	case int64:
		return v
	case float64:
		return int64(v)
	}
	require.Failf(t, "not a number", "field %s of %v is %T", key, d, d[key])
	return 0
}

// failPoint installs fp with the configureFailPoint command, so that the
// same call works on a real server started with enableTestCommands. The
// fail point acts only on the Runner's client (appName) and is turned off
// when the test ends.
func (e *env) failPoint(t *testing.T, fp mongotest.FailPoint) {
	t.Helper()
	data := bson.D{{Key: "failCommands", Value: fp.Commands}, {Key: "appName", Value: e.app}}
	if fp.ErrorCode != 0 {
		data = append(data, bson.E{Key: "errorCode", Value: fp.ErrorCode})
	}
	if fp.ErrorLabels != nil {
		data = append(data, bson.E{Key: "errorLabels", Value: fp.ErrorLabels})
	}
	if fp.CloseConnection {
		data = append(data, bson.E{Key: "closeConnection", Value: true})
	}
	if fp.CloseConnectionAfterApply {
		if e.srv == nil {
			t.Skip("closeConnectionAfterApply exists only in mongotest: a real server has no fail point that commits and then drops the connection")
		}
		data = append(data, bson.E{Key: "closeConnectionAfterApply", Value: true})
	}
	if fp.BlockTime > 0 {
		data = append(data, bson.E{Key: "blockConnection", Value: true}, bson.E{Key: "blockTimeMS", Value: fp.BlockTime.Milliseconds()})
	}
	if w := fp.WriteConcernError; w != nil {
		data = append(data, bson.E{Key: "writeConcernError", Value: bson.D{
			{Key: "code", Value: w.Code}, {Key: "codeName", Value: w.Name}, {Key: "errmsg", Value: w.Message},
		}})
	}
	var mode any = "alwaysOn"
	if fp.Times > 0 {
		mode = bson.D{{Key: "times", Value: fp.Times}}
	}
	cmd := bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: mode}, {Key: "data", Value: data}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.admin.Database("admin").RunCommand(ctx, cmd).Err(), "configureFailPoint")
	t.Cleanup(func() { e.clearFailPoint(t) })
}

// clearFailPoint turns the fail point off.
func (e *env) clearFailPoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: "off"}}
	assert.NoError(t, e.admin.Database("admin").RunCommand(ctx, cmd).Err(), "configureFailPoint off")
}

// killSession aborts the transaction a session may have left open on the
// server (killSessions), so that it does not hold its locks until
// transactionLifetimeLimitSeconds.
func (e *env) killSession(t *testing.T, id bson.Raw) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.admin.Database("admin").RunCommand(ctx, bson.D{{Key: "killSessions", Value: bson.A{id}}}).Err(), "killSessions")
}

// cmd is one command of a session, as the server logged it (mongotest) or
// as the driver sent it (a real server, through the command monitor).
type cmd struct {
	Name      string
	TxnNumber int64
	Start     bool
	Code      int32
	Labels    []string
	Failed    bool
	Hangup    bool // mongotest only
	Body      bson.Raw
}

// commands returns the commands of the session lsid in the order the
// server received them (mongotest) or the driver sent them.
func (e *env) commands(lsid string) []cmd {
	var out []cmd
	if e.srv != nil {
		for _, c := range e.srv.Commands() {
			if c.SessionID != lsid {
				continue
			}
			out = append(out, cmd{
				Name: c.Name, TxnNumber: c.TxnNumber, Start: c.StartTransaction,
				Code: c.ErrorCode, Labels: c.ErrorLabels, Failed: c.ErrorCode != 0 || c.Hangup,
				Hangup: c.Hangup, Body: c.Body,
			})
		}
		return out
	}
	return e.mon.session(lsid)
}

// resetCommands forgets the commands logged so far. Sessions are pooled,
// so a later Run may reuse the session id of an earlier one.
func (e *env) resetCommands() {
	if e.srv != nil {
		e.srv.ResetCommands()
	}
	e.mon.reset()
}

// summary renders cmds as "name#n", n numbering the session's
// transactions from 1, with " start" on the command that started one.
func summary(cmds []cmd) []string {
	out := make([]string, len(cmds))
	base := int64(-1)
	for i, c := range cmds {
		if base < 0 {
			base = c.TxnNumber - 1
		}
		out[i] = fmt.Sprintf("%s#%d", c.Name, c.TxnNumber-base)
		if c.Start {
			out[i] += " start"
		}
	}
	return out
}

// checkCommands fails the test unless the session's commands are want.
func checkCommands(t *testing.T, e *env, lsid string, want ...string) []cmd {
	t.Helper()
	cmds := e.commands(lsid)
	got := summary(cmds)
	require.Equal(t, want, got, "commands of the Run's session")
	return cmds
}

// sessionID returns the session id in the form the command logs use.
func sessionID(sess *mongo.Session) string {
	return mongotest.SessionID(sess.ID())
}

// monitor records the commands a client sends, for runs against a real
// server, where the server's log cannot be read.
type monitor struct {
	mu   sync.Mutex
	cmds []cmd
	lsid []string
	byID map[int64]int
}

func (m *monitor) commandMonitor() *event.CommandMonitor {
	return &event.CommandMonitor{
		Started: func(_ context.Context, ev *event.CommandStartedEvent) {
			c := cmd{Name: ev.CommandName, Body: slices.Clone(ev.Command)}
			if v, ok := ev.Command.Lookup("txnNumber").AsInt64OK(); ok {
				c.TxnNumber = v
			}
			c.Start, _ = ev.Command.Lookup("startTransaction").BooleanOK()
			lsid := ""
			if d, ok := ev.Command.Lookup("lsid").DocumentOK(); ok {
				lsid = mongotest.SessionID(d)
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.byID == nil {
				m.byID = map[int64]int{}
			}
			m.byID[ev.RequestID] = len(m.cmds)
			m.cmds = append(m.cmds, c)
			m.lsid = append(m.lsid, lsid)
		},
		Failed: func(_ context.Context, ev *event.CommandFailedEvent) {
			m.mu.Lock()
			defer m.mu.Unlock()
			i, ok := m.byID[ev.RequestID]
			if !ok {
				return
			}
			m.cmds[i].Failed = true
			var de driver.Error
			if errors.As(ev.Failure, &de) {
				m.cmds[i].Code = de.Code
				m.cmds[i].Labels = slices.Clone(de.Labels)
			}
		},
	}
}

func (m *monitor) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmds, m.lsid, m.byID = nil, nil, nil
}

func (m *monitor) session(lsid string) []cmd {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []cmd
	for i, c := range m.cmds {
		if m.lsid[i] == lsid {
			out = append(out, c)
		}
	}
	return out
}

// recorder is an Observer that keeps every event, with the time of the
// Runner's clock when there is one.
type recorder struct {
	txn.NopObserver
	clk *fakeclock.Clock

	mu       sync.Mutex
	attempts []time.Time
	retries  []txn.RetryEvent
	gaveUp   []txn.GiveUpEvent
	commits  int
}

func (r *recorder) now() time.Time {
	if r.clk != nil {
		return r.clk.Now()
	}
	return time.Now()
}

func (r *recorder) AttemptStarted(context.Context, txn.AttemptEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, r.now())
}

func (r *recorder) RetryScheduled(_ context.Context, e txn.RetryEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, e)
}

func (r *recorder) GaveUp(_ context.Context, e txn.GiveUpEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaveUp = append(r.gaveUp, e)
}

func (r *recorder) Committed(context.Context, txn.CommitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits++
}

func (r *recorder) retryClasses() []txn.Class {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]txn.Class, len(r.retries))
	for i, e := range r.retries {
		out[i] = e.Class
	}
	return out
}

// newClock returns a fake clock for a Runner. The ctx of the tests has no
// deadline, so its start is arbitrary.
func newClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
}

// commandError returns the mongo.CommandError in err's chain or fails.
func commandError(t *testing.T, err error) mongo.CommandError {
	t.Helper()
	var ce mongo.CommandError
	require.ErrorAs(t, err, &ce, "error %v (%T) wraps no mongo.CommandError", err, err)
	return ce
}

// gate forwards TCP connections to a target. Once armed with dieOnCut, the
// first connection the target side ends (a faultproxy.Proxy cutting it,
// for example) makes the gate close its listener and every connection
// before the client side of that connection sees the end: from the
// client's point of view the server vanished at that instant, and later
// connection attempts are refused. Placed in front of a faultproxy.Proxy
// that loses the reply of a commit, it makes "the server applied the
// commit, the reply was lost, and the server cannot be reached any more"
// happen for real, without a race against the driver's reconnection.
type gate struct {
	ln net.Listener

	mu     sync.Mutex
	target string
	conns  []net.Conn
	armed  bool
	dead   bool
	wg     sync.WaitGroup
}

// startGate listens on a free loopback port and forwards to target (which
// setTarget may set later, before the first connection). It is closed,
// with every connection, when the test ends.
func startGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &gate{ln: ln, target: target}
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(func() {
		g.die()
		g.wg.Wait()
	})
	return g
}

// Addr is the address to connect to.
func (g *gate) Addr() string { return g.ln.Addr().String() }

// setTarget sets the address the gate forwards to.
func (g *gate) setTarget(addr string) {
	g.mu.Lock()
	g.target = addr
	g.mu.Unlock()
}

// dieOnCut arms the gate: the next connection its target ends takes the
// whole gate down with it.
func (g *gate) dieOnCut() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

// die closes the listener and every connection.
func (g *gate) die() {
	g.mu.Lock()
	g.dead = true
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	_ = g.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		target := g.target
		g.mu.Unlock()
		s, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		g.mu.Lock()
		if g.dead {
			g.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			return
		}
		g.conns = append(g.conns, c, s)
		g.mu.Unlock()
		g.wg.Add(2)
		go g.pipe(c, s, false)
		go g.pipe(s, c, true)
	}
}

// pipe copies src to dst and closes both when src ends; fromTarget says
// that src is the target's side.
func (g *gate) pipe(dst, src net.Conn, fromTarget bool) {
	defer g.wg.Done()
	_, _ = io.Copy(dst, src)
	if fromTarget {
		g.mu.Lock()
		armed := g.armed
		g.mu.Unlock()
		if armed {
			g.die()
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// primaryAddr returns the host:port of the server that accepts the
// transactions of e: mongotest's address, or the primary a real replica
// set names in its hello reply.
func (e *env) primaryAddr(t *testing.T) string {
	t.Helper()
	if e.srv != nil {
		return e.srv.Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hello struct {
		Primary string `bson:"primary"`
	}
	require.NoError(t, e.admin.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello))
	require.NotEmpty(t, hello.Primary, "hello names no primary")
	return hello.Primary
}
