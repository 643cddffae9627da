package mongotest

import (
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The store keeps every document as a chain of committed versions, each
// stamped with the value of a logical clock at commit. A transaction reads
// the versions no newer than its snapshot (the clock when it started) plus its
// own pending writes, and takes a write lock on each document it writes.
// Writing a document locked by another transaction, or one committed after
// the snapshot, is a write conflict (first writer wins, as in WiredTiger).
// Writes outside transactions wait for the lock holder to finish.
//
// All of it is guarded by Server.mu.

// version is one committed state of a document; doc is nil for a deletion.
type version struct {
	ts  uint64
	doc bson.Raw
}

// record is the history of one _id in one collection.
type record struct {
	coll     *collection
	key      string
	versions []version
	lockedBy *transaction
	gone     bool
}

// latestTS returns the commit timestamp of the newest version, 0 if none.
func (r *record) latestTS() uint64 {
	if len(r.versions) == 0 {
		return 0
	}
	return r.versions[len(r.versions)-1].ts
}

// latest returns the newest committed document, nil if deleted or never
// committed.
func (r *record) latest() bson.Raw {
	if len(r.versions) == 0 {
		return nil
	}
	return r.versions[len(r.versions)-1].doc
}

// at returns the document as of snapshot ts, nil if it did not exist then.
func (r *record) at(ts uint64) bson.Raw {
	for i := len(r.versions) - 1; i >= 0; i-- {
		if r.versions[i].ts <= ts {
			return r.versions[i].doc
		}
	}
	return nil
}

// collection holds the records of one namespace in insertion order.
type collection struct {
	db, name string
	recs     map[string]*record
	order    []*record
	gone     int
	// createdBy is the transaction that created the collection and has
	// not ended yet: the collection exists for it alone, and an abort
	// removes it. nil once created outside a transaction or committed.
	createdBy *transaction
	// indexes are its secondary indexes (the _id index is implicit).
	indexes []*index
	// dropped is true once drop removed the collection; its records stay
	// for the snapshots of open transactions, and a later write creates
	// it again.
	dropped bool
}

func (c *collection) ns() string { return c.db + "." + c.name }

// txnState is the state of a session's current transaction number.
type txnState int

const (
	txnNone txnState = iota
	txnInProgress
	txnCommitted
	txnAborted
)

// transaction is one multi-document transaction on the server: its
// snapshot, its pending writes and the records it has locked.
type transaction struct {
	sess     *session
	number   int64
	snapshot uint64
	started  time.Time
	pending  map[*record]bson.Raw
	order    []*record
	// created lists the collections the transaction created.
	created []*collection
}

// session is the server side of a logical session.
type session struct {
	key       string
	txnNumber int64
	state     txnState
	txn       *transaction // the last transaction started on the session
	// retryReply caches the reply of the retryable write with number
	// txnNumber, returned again when the driver retries it.
	retryReply bson.D
	lastUsed   time.Time
}

// item is a document visible to a reader together with its record.
type item struct {
	rec *record
	doc bson.Raw
}

// engine is the document store, the sessions and their transactions.
type engine struct {
	clock    uint64
	colls    map[string]*collection
	sessions map[string]*session
	active   map[*transaction]struct{}
	dirty    map[*record]struct{}
	// changed is closed and replaced whenever a lock is released, waking
	// writers that wait for one.
	changed chan struct{}
}

func newEngine() *engine {
	return &engine{
		colls:    map[string]*collection{},
		sessions: map[string]*session{},
		active:   map[*transaction]struct{}{},
		dirty:    map[*record]struct{}{},
		changed:  make(chan struct{}),
	}
}

// tick advances the logical clock and returns the new time.
func (e *engine) tick() uint64 {
	e.clock++
	return e.clock
}

// notify wakes every writer waiting for a lock.
func (e *engine) notify() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// coll returns the collection db.name, creating it when create is true.
func (e *engine) coll(db, name string, create bool) *collection {
	ns := db + "." + name
	c := e.colls[ns]
	if c == nil && create {
		c = &collection{db: db, name: name, recs: map[string]*record{}}
		e.colls[ns] = c
	}
	return c
}

// createColl returns the collection db.name for a write of tx (nil: a
// write outside a transaction), creating it when it does not exist, as a
// part of tx when tx is not nil (as mongod 4.4 and later does). A
// collection that another transaction created and has not committed is
// a write conflict for a transaction and a lock to wait for outside one.
func (e *engine) createColl(db, name string, tx *transaction) (*collection, *cmdError) {
	c := e.coll(db, name, false)
	switch {
	case c == nil:
		c = e.coll(db, name, true)
	case c.createdBy != nil && c.createdBy != tx:
		if tx == nil {
			return nil, blocked()
		}
		return nil, writeConflict()
	case c.dropped:
		c.dropped = false
	default:
		return c, nil
	}
	if tx != nil {
		c.createdBy = tx
		tx.created = append(tx.created, c)
	}
	return c, nil
}

// exists reports whether c is a collection that listCollections shows.
func (c *collection) exists() bool {
	return c != nil && !c.dropped && c.createdBy == nil
}

// record returns the record for key in c, creating an empty one when
// create is true.
func (e *engine) record(c *collection, key string, create bool) *record {
	r := c.recs[key]
	if r == nil && create {
		r = &record{coll: c, key: key}
		c.recs[key] = r
		c.order = append(c.order, r)
	}
	return r
}

// visible returns the document of r as seen by tx (nil tx: latest
// committed).
func visible(r *record, tx *transaction) bson.Raw {
	if tx != nil {
		if doc, ok := tx.pending[r]; ok {
			return doc
		}
		return r.at(tx.snapshot)
	}
	return r.latest()
}

// scan returns the documents of c visible to tx in natural order.
func (e *engine) scan(c *collection, tx *transaction) []item {
	if c == nil {
		return nil
	}
	var out []item
	for _, r := range c.order {
		if r.gone {
			continue
		}
		if doc := visible(r, tx); doc != nil {
			out = append(out, item{rec: r, doc: doc})
		}
	}
	return out
}

// lookup returns the document with key in c as seen by tx.
func (e *engine) lookup(c *collection, key string, tx *transaction) (*record, bson.Raw) {
	if c == nil {
		return nil, nil
	}
	r := c.recs[key]
	if r == nil {
		return nil, nil
	}
	return r, visible(r, tx)
}

func writeConflict() *cmdError {
	return errorf(codeWriteConflict, "WriteConflict error: this operation conflicted with another operation. Please retry your operation or multi-document transaction.")
}

// blocked returns an error that tells the caller to wait for a lock.
func blocked() *cmdError { return &cmdError{blocked: true} }

// canWrite checks that tx (nil: a write outside a transaction) may write r:
// inside a transaction a lock held by another transaction or a version
// committed after the snapshot is a write conflict; outside, a lock held by
// a transaction means wait.
func canWrite(r *record, tx *transaction) *cmdError {
	if r == nil {
		return nil
	}
	if tx == nil {
		if r.lockedBy != nil {
			return blocked()
		}
		return nil
	}
	if r.lockedBy != nil && r.lockedBy != tx {
		return writeConflict()
	}
	if r.latestTS() > tx.snapshot {
		return writeConflict()
	}
	return nil
}

// write stores doc (nil: delete) under key in c for tx, or commits it at once
// when tx is nil. The caller has checked canWrite.
func (e *engine) write(c *collection, key string, doc bson.Raw, tx *transaction) {
	r := e.record(c, key, true)
	if tx != nil {
		if _, ok := tx.pending[r]; !ok {
			tx.order = append(tx.order, r)
		}
		tx.pending[r] = doc
		r.lockedBy = tx
		return
	}
	r.versions = append(r.versions, version{ts: e.tick(), doc: doc})
	e.dirty[r] = struct{}{}
	e.prune(r)
}

// session returns the session for key, creating it.
func (e *engine) session(key string, now time.Time) *session {
	s := e.sessions[key]
	if s == nil {
		s = &session{key: key, txnNumber: -1}
		e.sessions[key] = s
	}
	s.lastUsed = now
	return s
}

// begin starts transaction number n on s, aborting any open one.
func (e *engine) begin(s *session, n int64, now time.Time) *transaction {
	if s.state == txnInProgress {
		e.abort(s.txn)
	}
	tx := &transaction{sess: s, number: n, snapshot: e.clock, started: now, pending: map[*record]bson.Raw{}}
	s.txnNumber = n
	s.state = txnInProgress
	s.txn = tx
	s.retryReply = nil
	e.active[tx] = struct{}{}
	return tx
}

// commit applies the writes of tx atomically at one new timestamp.
func (e *engine) commit(tx *transaction) {
	if len(tx.order) > 0 {
		ts := e.tick()
		for _, r := range tx.order {
			r.versions = append(r.versions, version{ts: ts, doc: tx.pending[r]})
			r.lockedBy = nil
			e.dirty[r] = struct{}{}
		}
	}
	for _, c := range tx.created {
		if c.createdBy == tx {
			c.createdBy = nil
		}
	}
	e.finish(tx, txnCommitted)
}

// abort discards the writes of tx.
func (e *engine) abort(tx *transaction) {
	for _, r := range tx.order {
		r.lockedBy = nil
		e.dirty[r] = struct{}{}
	}
	for _, c := range tx.created {
		if c.createdBy == tx {
			// Only tx could write to it: every record holds nothing
			// but tx's discarded writes.
			delete(e.colls, c.ns())
		}
	}
	e.finish(tx, txnAborted)
}

func (e *engine) finish(tx *transaction, st txnState) {
	tx.pending = nil
	tx.order = nil
	tx.created = nil
	delete(e.active, tx)
	if tx.sess.txn == tx {
		tx.sess.state = st
	}
	e.notify()
	for r := range e.dirty {
		e.prune(r)
	}
}

// minSnapshot returns the oldest snapshot an open transaction reads at.
func (e *engine) minSnapshot() uint64 {
	m := uint64(math.MaxUint64)
	for tx := range e.active {
		m = min(m, tx.snapshot)
	}
	return m
}

// prune drops the versions of r that no open transaction can read, and r
// itself once nothing but an unreadable deletion is left.
func (e *engine) prune(r *record) {
	if r.gone {
		delete(e.dirty, r)
		return
	}
	keep := e.minSnapshot()
	j := 0
	for i, v := range r.versions {
		if v.ts <= keep {
			j = i
		}
	}
	if j > 0 {
		r.versions = append([]version(nil), r.versions[j:]...)
	}
	if r.lockedBy != nil {
		return
	}
	switch {
	case len(r.versions) == 0,
		len(r.versions) == 1 && r.versions[0].doc == nil && r.versions[0].ts <= keep:
		e.remove(r)
		delete(e.dirty, r)
	case len(r.versions) == 1:
		delete(e.dirty, r)
	}
}

// remove deletes r from its collection.
func (e *engine) remove(r *record) {
	c := r.coll
	if c.recs[r.key] == r {
		delete(c.recs, r.key)
	}
	r.gone = true
	c.gone++
	if c.gone > 64 && c.gone*2 > len(c.order) {
		live := c.order[:0]
		for _, x := range c.order {
			if !x.gone {
				live = append(live, x)
			}
		}
		clear(c.order[len(live):])
		c.order = live
		c.gone = 0
	}
}

// reap aborts transactions older than lifetime and forgets idle sessions
// without an open transaction.
func (e *engine) reap(now time.Time, lifetime, sessionIdle time.Duration) {
	for tx := range e.active {
		if now.Sub(tx.started) > lifetime {
			e.abort(tx)
		}
	}
	for k, s := range e.sessions {
		if s.state != txnInProgress && now.Sub(s.lastUsed) > sessionIdle {
			delete(e.sessions, k)
		}
	}
}

// endSession aborts the open transaction of the session key and forgets it.
func (e *engine) endSession(key string) {
	s := e.sessions[key]
	if s == nil {
		return
	}
	if s.state == txnInProgress {
		e.abort(s.txn)
	}
	delete(e.sessions, key)
}

// dropColl deletes every document of c at one timestamp. The caller has
// checked that no transaction holds a lock in c.
func (e *engine) dropColl(c *collection) {
	c.dropped = true
	c.indexes = nil
	ts := e.tick()
	for _, r := range c.order {
		if r.gone || r.latest() == nil {
			continue
		}
		r.versions = append(r.versions, version{ts: ts, doc: nil})
		e.dirty[r] = struct{}{}
	}
	for r := range e.dirty {
		e.prune(r)
	}
}

// lockedIn reports whether a transaction holds a lock on a record of c,
// or created c and has not committed yet.
func lockedIn(c *collection) bool {
	if c.createdBy != nil {
		return true
	}
	for _, r := range c.order {
		if !r.gone && r.lockedBy != nil {
			return true
		}
	}
	return false
}
