package mongotest

import (
	"bytes"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// op runs a prepared data command against the store with s.mu held; tx is
// the command's transaction, nil outside one. An op that returns a blocked
// error is called again after the lock it waits for is released, and
// resumes where it stopped.
type op func(tx *txn) (bson.D, *cmdError)

// prepFunc parses a data command into an op.
type prepFunc func(s *Server, req *request) (op, *cmdError)

// dataCommand returns the parser of a command that reads or writes
// documents, nil for other commands.
func (s *Server) dataCommand(name string) prepFunc {
	switch name {
	case "find":
		return prepFind
	case "insert":
		return prepInsert
	case "update":
		return prepUpdate
	case "delete":
		return prepDelete
	case "findAndModify", "findandmodify":
		return prepFindAndModify
	case "count":
		return prepCount
	case "aggregate":
		return prepAggregate
	case "drop":
		return prepDrop
	case "dropDatabase":
		return prepDropDatabase
	case "create":
		return prepCreate
	case "listCollections":
		return prepListCollections
	case "getMore":
		return func(*Server, *request) (op, *cmdError) {
			return nil, errorf(codeCursorNotFound, "cursor id not found: mongotest returns every result in the first batch")
		}
	case "killCursors":
		return prepKillCursors
	}
	return nil
}

// allowedInTxn reports whether a command may run inside a transaction.
func allowedInTxn(name string) bool {
	switch name {
	case "find", "insert", "update", "delete", "findAndModify", "findandmodify",
		"aggregate", "getMore", "killCursors", "create":
		return true
	}
	return false
}

// pollInterval bounds how long a waiting writer sleeps before it looks
// again for expired transactions, its own deadline and server shutdown.
const pollInterval = 20 * time.Millisecond

// runData runs a data command with MongoDB's session rules: inside a
// transaction (any error aborts it), as a retryable write (a retry of the
// same txnNumber gets the first reply again), or on its own, waiting while
// a transaction holds a lock on a document it writes.
func (s *Server) runData(req *request, prep prepFunc) (bson.D, *cmdError) {
	if req.inTxn && !allowedInTxn(req.name) {
		s.failTxn(req)
		return nil, errorf(codeOperationNotSupportedInTxn, "Cannot run '%s' in a multi-document transaction.", req.name)
	}
	run, err := prep(s, req)
	if err != nil {
		s.failTxn(req)
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.eng.reap(now, s.cfg.txnLifetime, sessionTimeoutMinutes*time.Minute)

	if req.inTxn {
		tx, err := s.txnFor(req, now)
		if err != nil {
			return nil, err
		}
		out, err := run(tx)
		if err != nil || hasWriteErrors(out) {
			s.eng.abort(tx)
		}
		return out, err
	}

	var sess *session
	if req.hasTxnNumber {
		if !isWriteCommand(req.name) {
			return nil, errorf(codeInvalidOptions, "txnNumber may only be provided for multi-document transactions and retryable write commands")
		}
		if req.lsid == "" {
			return nil, errorf(codeInvalidOptions, "Transaction number requires a session ID to also be specified")
		}
		sess = s.eng.session(req.lsid, now)
		switch n := req.txnNumber; {
		case n < sess.txnNumber:
			return nil, errorf(codeTransactionTooOld, "Retryable write with txnNumber %d is prohibited on session %s because a newer retryable write with txnNumber %d has already started", n, req.lsidText, sess.txnNumber)
		case n == sess.txnNumber:
			if sess.state == txnNone && sess.retryReply != nil {
				return sess.retryReply, nil
			}
			if sess.state != txnNone {
				return nil, errorf(codeIncompleteTransactionHistory, "Cannot run a retryable write with txnNumber %d, which a transaction used", n)
			}
		default:
			if sess.state == txnInProgress {
				s.eng.abort(sess.txn)
			}
			sess.txnNumber, sess.state, sess.txn, sess.retryReply = n, txnNone, nil, nil
		}
	}

	var deadline time.Time
	if req.maxTime > 0 {
		deadline = now.Add(req.maxTime)
	}
	for {
		out, err := run(nil)
		if err == nil || !err.blocked {
			if err == nil && sess != nil && sess.txnNumber == req.txnNumber && sess.state == txnNone {
				sess.retryReply = out
			}
			return out, err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil, errorf(codeMaxTimeMSExpired, "operation exceeded time limit")
		}
		changed := s.eng.changed
		s.mu.Unlock()
		t := time.NewTimer(pollInterval)
		select {
		case <-changed:
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
		s.mu.Lock()
		select {
		case <-s.done:
			return nil, errorf(codeShutdownInProgress, "The server is shutting down")
		default:
		}
		s.eng.reap(time.Now(), s.cfg.txnLifetime, sessionTimeoutMinutes*time.Minute)
	}
}

// hasWriteErrors reports whether a write reply carries writeErrors.
func hasWriteErrors(out bson.D) bool {
	for _, e := range out {
		if e.Key == "writeErrors" {
			return true
		}
	}
	return false
}

// docArg returns the document field key of the command, an empty document
// when absent.
func docArg(req *request, key string) (bson.Raw, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil || v.Type == bson.TypeNull {
		return buildDoc(nil), nil
	}
	d, ok := v.DocumentOK()
	if !ok {
		return nil, errorf(codeTypeMismatch, "BSON field '%s.%s' is the wrong type '%s', expected type 'object'", req.name, key, v.Type)
	}
	return d, nil
}

// intArg returns the integer field key of the command, 0 when absent.
func intArg(req *request, key string) (int64, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil {
		return 0, nil
	}
	if isNumber(v) {
		return int64(asFloat(v)), nil
	}
	return 0, errorf(codeTypeMismatch, "BSON field '%s.%s' must be a number", req.name, key)
}

// boolArg returns the boolean field key of the command, false when absent.
func boolArg(req *request, key string) bool {
	v, err := req.body.LookupErr(key)
	if err != nil {
		return false
	}
	if b, ok := v.BooleanOK(); ok {
		return b
	}
	return isNumber(v) && asFloat(v) != 0
}

// docsArg returns the array of documents key of the command.
func docsArg(req *request, key string) ([]bson.Raw, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil || v.Type != bson.TypeArray {
		return nil, errorf(codeFailedToParse, "BSON field '%s.%s' is missing or not an array", req.name, key)
	}
	var out []bson.Raw
	for _, e := range arrayValues(v) {
		d, ok := e.DocumentOK()
		if !ok {
			return nil, errorf(codeTypeMismatch, "BSON field '%s.%s' must be an array of documents", req.name, key)
		}
		out = append(out, d)
	}
	return out, nil
}

// needColl checks that the command names its collection.
func needColl(req *request) *cmdError {
	if req.coll == "" {
		return errorf(codeInvalidNamespace, "Invalid namespace specified for %s", req.name)
	}
	return nil
}

// collDocArgs checks that the command names its collection and returns its
// document fields keys, in order.
func collDocArgs(req *request, keys ...string) ([]bson.Raw, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	out := make([]bson.Raw, len(keys))
	for i, k := range keys {
		d, err := docArg(req, k)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// candidates returns the documents of c matching filter as seen by tx,
// looking a plain _id equality up directly.
func (s *Server) candidates(c *collection, filter bson.Raw, tx *txn) ([]item, *cmdError) {
	if c == nil {
		return nil, nil
	}
	src := s.idLookup(c, filter, tx)
	if src == nil {
		src = s.eng.scan(c, tx)
	}
	out := src[:0:0]
	for _, it := range src {
		ok, err := matches(it.doc, filter)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, it)
		}
	}
	return out, nil
}

// idLookup returns the single document a plain _id equality in filter
// selects (an empty, non-nil slice when there is none), or nil when filter
// has no such condition.
func (s *Server) idLookup(c *collection, filter bson.Raw, tx *txn) []item {
	id, err := filter.LookupErr("_id")
	if err != nil || id.Type == bson.TypeArray || id.Type == bson.TypeRegex {
		return nil
	}
	if _, isOps := isOperatorDoc(id); isOps {
		return nil
	}
	if r, doc := s.eng.lookup(c, valueKey(id), tx); doc != nil {
		return []item{{rec: r, doc: doc}}
	}
	return []item{}
}

// cursorReply returns a find or aggregate reply that holds every result in
// the first batch and a closed cursor.
func cursorReply(ns string, docs []bson.Raw) bson.D {
	return bson.D{{Key: "cursor", Value: bson.D{
		{Key: "firstBatch", Value: toArray(docs)},
		{Key: "id", Value: int64(0)},
		{Key: "ns", Value: ns},
	}}}
}

func prepFind(s *Server, req *request) (op, *cmdError) {
	args, err := collDocArgs(req, "filter", "sort", "projection")
	if err != nil {
		return nil, err
	}
	filter, sortSpec, proj := args[0], args[1], args[2]
	skip, limit, err := windowArgs(req)
	if err != nil {
		return nil, err
	}
	return func(tx *txn) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), filter, tx)
		if err != nil {
			return nil, err
		}
		docs := window(sorted(docsOf(items), sortSpec), skip, limit)
		for i, d := range docs {
			docs[i] = project(d, proj)
		}
		return cursorReply(req.db+"."+req.coll, docs), nil
	}, nil
}

// sorted sorts docs by spec and returns them.
func sorted(docs []bson.Raw, spec bson.Raw) []bson.Raw {
	sortDocs(docs, spec)
	return docs
}

// window applies skip and limit (0: no limit).
func window(docs []bson.Raw, skip, limit int64) []bson.Raw {
	if skip > 0 {
		if skip >= int64(len(docs)) {
			return nil
		}
		docs = docs[skip:]
	}
	if limit > 0 && limit < int64(len(docs)) {
		docs = docs[:limit]
	}
	return docs
}

// writeError builds one entry of writeErrors.
func writeError(index int, err *cmdError) bson.D {
	d := bson.D{
		{Key: "index", Value: int32(index)},
		{Key: "code", Value: err.code},
	}
	if name := codeName(err.code); name != "" {
		d = append(d, bson.E{Key: "codeName", Value: name})
	}
	return append(d, bson.E{Key: "errmsg", Value: err.msg})
}

func duplicateKey(ns string, id bson.RawValue) *cmdError {
	return errorf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: _id_ dup key: { _id: %s }", ns, id)
}

// writeReply assembles the reply of insert, update and delete.
func writeReply(fields bson.D, writeErrors []bson.D) bson.D {
	if len(writeErrors) > 0 {
		fields = append(fields, bson.E{Key: "writeErrors", Value: toArray(writeErrors)})
	}
	return fields
}

// toArray converts xs to a BSON array.
func toArray[T any](xs []T) bson.A {
	a := make(bson.A, len(xs))
	for i, x := range xs {
		a[i] = x
	}
	return a
}

// writeBatch runs the statements of insert, update and delete one by one
// from where an earlier, blocked call stopped. A statement error goes to
// writeErrors and, when the batch is ordered, ends it.
type writeBatch struct {
	n           int
	ordered     bool
	next        int
	writeErrors []bson.D
}

// writeStmts checks that the write command names its collection and
// returns its array of documents key with a batch over them.
func writeStmts(req *request, key string) ([]bson.Raw, *writeBatch, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, nil, err
	}
	stmts, err := docsArg(req, key)
	if err != nil {
		return nil, nil, err
	}
	ordered := true
	if v, err := req.body.LookupErr("ordered"); err == nil {
		ordered, _ = v.BooleanOK()
	}
	return stmts, &writeBatch{n: len(stmts), ordered: ordered}, nil
}

// run calls stmt for each statement not yet done. stmt returns werr for a
// statement error, err to stop the command (write conflict, or wait for a
// lock, after which run resumes at the same statement).
func (b *writeBatch) run(stmt func(i int) (werr, err *cmdError)) *cmdError {
	for ; b.next < b.n; b.next++ {
		werr, err := stmt(b.next)
		if err != nil {
			return err
		}
		if werr != nil {
			b.writeErrors = append(b.writeErrors, writeError(b.next, werr))
			if b.ordered {
				b.next = b.n
				break
			}
		}
	}
	return nil
}

// stmtQuery returns the q document of a write statement, an empty document
// when absent.
func stmtQuery(st bson.Raw) bson.Raw {
	q, _ := st.Lookup("q").DocumentOK()
	if q == nil {
		q = buildDoc(nil)
	}
	return q
}

// windowArgs returns the skip and limit fields of the command, a negative
// limit made positive.
func windowArgs(req *request) (skip, limit int64, err *cmdError) {
	if skip, err = intArg(req, "skip"); err != nil {
		return 0, 0, err
	}
	if limit, err = intArg(req, "limit"); err != nil {
		return 0, 0, err
	}
	if limit < 0 {
		limit = -limit
	}
	return skip, limit, nil
}

// docsOf returns the documents of items.
func docsOf(items []item) []bson.Raw {
	docs := make([]bson.Raw, len(items))
	for i, it := range items {
		docs[i] = it.doc
	}
	return docs
}

// insertNew writes doc, which must not exist yet, into c. werr reports a
// duplicate _id; err a write conflict or a lock to wait for.
func (s *Server) insertNew(c *collection, ns string, doc bson.Raw, tx *txn) (id bson.RawValue, werr, err *cmdError) {
	id = doc.Lookup("_id")
	key := valueKey(id)
	r, cur := s.eng.lookup(c, key, tx)
	if cur != nil {
		return id, duplicateKey(ns, id), nil
	}
	if err := canWrite(r, tx); err != nil {
		return id, nil, err
	}
	s.eng.write(c, key, doc, tx)
	return id, nil, nil
}

func prepInsert(s *Server, req *request) (op, *cmdError) {
	docs, b, err := writeStmts(req, "documents")
	if err != nil {
		return nil, err
	}
	ns := req.db + "." + req.coll
	n := 0
	return func(tx *txn) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, true)
		err := b.run(func(i int) (werr, err *cmdError) {
			d := ensureID(docs[i])
			if id := d.Lookup("_id"); id.Type == bson.TypeArray || id.Type == bson.TypeRegex {
				return errorf(codeBadValue, "can't use an array or regex for _id"), nil
			}
			if _, werr, err = s.insertNew(c, ns, d, tx); werr == nil && err == nil {
				n++
			}
			return werr, err
		})
		if err != nil {
			return nil, err
		}
		return writeReply(bson.D{{Key: "n", Value: int32(n)}}, b.writeErrors), nil
	}, nil
}

// upsertDoc builds the document an upsert inserts from the query's
// equality conditions and the update.
func upsertDoc(q bson.Raw, u bson.RawValue, now time.Time) (bson.Raw, *cmdError) {
	base := buildDoc(equalityFields(q))
	if ud, ok := u.DocumentOK(); ok && isReplacement(ud) {
		if id, err := base.LookupErr("_id"); err == nil {
			if _, err := ud.LookupErr("_id"); err != nil {
				return withID(ud, id), nil
			}
		}
		return ensureID(ud), nil
	}
	doc, err := applyUpdate(base, u, true, now)
	if err != nil {
		return nil, err
	}
	return ensureID(doc), nil
}

func prepUpdate(s *Server, req *request) (op, *cmdError) {
	stmts, b, err := writeStmts(req, "updates")
	if err != nil {
		return nil, err
	}
	ns := req.db + "." + req.coll
	n, modified := 0, 0
	var upserted bson.A
	return func(tx *txn) (bson.D, *cmdError) {
		err := b.run(func(i int) (werr, err *cmdError) {
			st := stmts[i]
			upsert, _ := st.Lookup("upsert").BooleanOK()
			multi, _ := st.Lookup("multi").BooleanOK()
			dn, dm, id, werr, err := s.updateOne(req, ns, stmtQuery(st), st.Lookup("u"), upsert, multi, tx)
			if werr != nil || err != nil {
				return werr, err
			}
			n += dn
			modified += dm
			if id.Type != 0 {
				upserted = append(upserted, bson.D{{Key: "index", Value: int32(i)}, {Key: "_id", Value: id}})
			}
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		out := bson.D{{Key: "n", Value: int32(n)}, {Key: "nModified", Value: int32(modified)}}
		if len(upserted) > 0 {
			out = append(out, bson.E{Key: "upserted", Value: upserted})
		}
		return writeReply(out, b.writeErrors), nil
	}, nil
}

// updateOne runs one update statement atomically: it computes every new
// document first and writes only when all of them may be written. werr is a
// statement error for writeErrors; err stops the command (write conflict,
// or wait for a lock).
func (s *Server) updateOne(req *request, ns string, q bson.Raw, u bson.RawValue, upsert, multi bool, tx *txn) (n, modified int, upsertedID bson.RawValue, werr, err *cmdError) {
	now := time.Now()
	c := s.eng.coll(req.db, req.coll, upsert)
	items, merr := s.candidates(c, q, tx)
	if merr != nil {
		return 0, 0, bson.RawValue{}, merr, nil
	}
	if !multi && len(items) > 1 {
		items = items[:1]
	}
	if ud, ok := u.DocumentOK(); ok && multi && isReplacement(ud) {
		return 0, 0, bson.RawValue{}, errorf(codeFailedToParse, "multi update is not supported for replacement-style update"), nil
	}
	if len(items) == 0 {
		if !upsert {
			return 0, 0, bson.RawValue{}, nil, nil
		}
		doc, uerr := upsertDoc(q, u, now)
		if uerr != nil {
			return 0, 0, bson.RawValue{}, uerr, nil
		}
		id, werr, err := s.insertNew(c, ns, doc, tx)
		if werr != nil || err != nil {
			return 0, 0, bson.RawValue{}, werr, err
		}
		return 1, 0, id, nil, nil
	}
	type change struct {
		key string
		doc bson.Raw
	}
	var changes []change
	for _, it := range items {
		nd, uerr := applyUpdate(it.doc, u, false, now)
		if uerr != nil {
			return 0, 0, bson.RawValue{}, uerr, nil
		}
		if bytes.Equal(nd, it.doc) {
			continue
		}
		if err := canWrite(it.rec, tx); err != nil {
			return 0, 0, bson.RawValue{}, nil, err
		}
		changes = append(changes, change{key: it.rec.key, doc: nd})
	}
	for _, ch := range changes {
		s.eng.write(c, ch.key, ch.doc, tx)
	}
	return len(items), len(changes), bson.RawValue{}, nil, nil
}

func prepDelete(s *Server, req *request) (op, *cmdError) {
	stmts, b, err := writeStmts(req, "deletes")
	if err != nil {
		return nil, err
	}
	n := 0
	return func(tx *txn) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, false)
		err := b.run(func(i int) (werr, err *cmdError) {
			st := stmts[i]
			limit, _ := st.Lookup("limit").AsInt64OK()
			items, merr := s.candidates(c, stmtQuery(st), tx)
			if merr != nil {
				return merr, nil
			}
			if limit == 1 && len(items) > 1 {
				items = items[:1]
			}
			for _, it := range items {
				if err := canWrite(it.rec, tx); err != nil {
					return nil, err
				}
			}
			for _, it := range items {
				s.eng.write(c, it.rec.key, nil, tx)
			}
			n += len(items)
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		return writeReply(bson.D{{Key: "n", Value: int32(n)}}, b.writeErrors), nil
	}, nil
}

func prepFindAndModify(s *Server, req *request) (op, *cmdError) {
	args, err := collDocArgs(req, "query", "sort", "fields")
	if err != nil {
		return nil, err
	}
	q, sortSpec, fields := args[0], args[1], args[2]
	remove := boolArg(req, "remove")
	returnNew := boolArg(req, "new")
	upsert := boolArg(req, "upsert")
	u, uerr := req.body.LookupErr("update")
	if remove == (uerr == nil) {
		return nil, errorf(codeFailedToParse, "findAndModify needs exactly one of remove and update")
	}
	if remove && (upsert || returnNew) {
		return nil, errorf(codeFailedToParse, "Cannot specify both an update and remove=true, nor upsert or new with remove")
	}
	ns := req.db + "." + req.coll
	return func(tx *txn) (bson.D, *cmdError) {
		now := time.Now()
		c := s.eng.coll(req.db, req.coll, upsert)
		items, err := s.candidates(c, q, tx)
		if err != nil {
			return nil, err
		}
		if len(items) > 1 {
			sortBy(items, func(it item) bson.Raw { return it.doc }, sortSpec)
		}
		reply := func(n int, updatedExisting bool, upserted bson.RawValue, value bson.Raw) bson.D {
			leo := bson.D{{Key: "n", Value: int32(n)}}
			if !remove {
				leo = append(leo, bson.E{Key: "updatedExisting", Value: updatedExisting})
			}
			if upserted.Type != 0 {
				leo = append(leo, bson.E{Key: "upserted", Value: upserted})
			}
			var v any
			if value != nil {
				v = project(value, fields)
			}
			return bson.D{{Key: "lastErrorObject", Value: leo}, {Key: "value", Value: v}}
		}
		if len(items) == 0 {
			if !upsert {
				return reply(0, false, bson.RawValue{}, nil), nil
			}
			doc, err := upsertDoc(q, u, now)
			if err != nil {
				return nil, err
			}
			id, werr, err := s.insertNew(c, ns, doc, tx)
			if werr != nil {
				return nil, werr
			}
			if err != nil {
				return nil, err
			}
			var value bson.Raw
			if returnNew {
				value = doc
			}
			return reply(1, false, id, value), nil
		}
		it := items[0]
		if remove {
			if err := canWrite(it.rec, tx); err != nil {
				return nil, err
			}
			s.eng.write(c, it.rec.key, nil, tx)
			return reply(1, false, bson.RawValue{}, it.doc), nil
		}
		nd, err := applyUpdate(it.doc, u, false, now)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(nd, it.doc) {
			if err := canWrite(it.rec, tx); err != nil {
				return nil, err
			}
			s.eng.write(c, it.rec.key, nd, tx)
		}
		value := it.doc
		if returnNew {
			value = nd
		}
		return reply(1, true, bson.RawValue{}, value), nil
	}, nil
}

func prepCount(s *Server, req *request) (op, *cmdError) {
	args, err := collDocArgs(req, "query")
	if err != nil {
		return nil, err
	}
	q := args[0]
	skip, limit, err := windowArgs(req)
	if err != nil {
		return nil, err
	}
	return func(tx *txn) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), q, tx)
		if err != nil {
			return nil, err
		}
		return bson.D{{Key: "n", Value: int64(len(window(docsOf(items), skip, limit)))}}, nil
	}, nil
}

// prepAggregate supports the stages $match, $sort, $skip, $limit,
// $project, $count and a $group whose accumulators are $sum, which covers
// the driver's CountDocuments.
func prepAggregate(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	stages, err := docsArg(req, "pipeline")
	if err != nil {
		return nil, err
	}
	for _, st := range stages {
		fs := fieldsOf(st)
		if len(fs) != 1 {
			return nil, errorf(codeFailedToParse, "A pipeline stage specification object must contain exactly one field.")
		}
		switch fs[0].key {
		case "$match", "$sort", "$skip", "$limit", "$project", "$count", "$group":
		default:
			return nil, errorf(codeFailedToParse, "mongotest does not support the pipeline stage %s", fs[0].key)
		}
	}
	return func(tx *txn) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), buildDoc(nil), tx)
		if err != nil {
			return nil, err
		}
		docs := docsOf(items)
		for _, st := range stages {
			f := fieldsOf(st)[0]
			docs, err = applyStage(docs, f)
			if err != nil {
				return nil, err
			}
		}
		return cursorReply(req.db+"."+req.coll, docs), nil
	}, nil
}

// applyStage runs one aggregation stage.
func applyStage(docs []bson.Raw, st field) ([]bson.Raw, *cmdError) {
	switch st.key {
	case "$match":
		filter, ok := st.val.DocumentOK()
		if !ok {
			return nil, errorf(codeFailedToParse, "$match must be a document")
		}
		out := docs[:0:0]
		for _, d := range docs {
			m, err := matches(d, filter)
			if err != nil {
				return nil, err
			}
			if m {
				out = append(out, d)
			}
		}
		return out, nil
	case "$sort":
		spec, ok := st.val.DocumentOK()
		if !ok {
			return nil, errorf(codeFailedToParse, "$sort must be a document")
		}
		return sorted(docs, spec), nil
	case "$skip", "$limit":
		if !isNumber(st.val) {
			return nil, errorf(codeFailedToParse, "%s must be a number", st.key)
		}
		n := int64(asFloat(st.val))
		if st.key == "$skip" {
			return window(docs, n, 0), nil
		}
		return window(docs, 0, n), nil
	case "$project":
		spec, ok := st.val.DocumentOK()
		if !ok {
			return nil, errorf(codeFailedToParse, "$project must be a document")
		}
		out := make([]bson.Raw, len(docs))
		for i, d := range docs {
			out[i] = project(d, spec)
		}
		return out, nil
	case "$count":
		name, ok := st.val.StringValueOK()
		if !ok || name == "" {
			return nil, errorf(codeFailedToParse, "$count must be a non-empty string")
		}
		if len(docs) == 0 {
			return nil, nil
		}
		return []bson.Raw{buildDoc([]field{{key: name, val: mustValue(int32(len(docs)))}})}, nil
	}
	return group(docs, st.val)
}

// group runs a $group stage with $sum accumulators.
func group(docs []bson.Raw, spec bson.RawValue) ([]bson.Raw, *cmdError) {
	sd, ok := spec.DocumentOK()
	if !ok {
		return nil, errorf(codeFailedToParse, "$group must be a document")
	}
	idExpr, err := sd.LookupErr("_id")
	if err != nil {
		return nil, errorf(codeFailedToParse, "a group specification must include an _id")
	}
	type acc struct {
		id   bson.RawValue
		sums []bson.RawValue
	}
	var names []string
	var exprs []bson.RawValue
	for _, f := range fieldsOf(sd) {
		if f.key == "_id" {
			continue
		}
		a, ok := f.val.DocumentOK()
		sum, serr := a.LookupErr("$sum")
		if !ok || serr != nil || len(fieldsOf(a)) != 1 {
			return nil, errorf(codeFailedToParse, "mongotest supports only $sum accumulators in $group")
		}
		names = append(names, f.key)
		exprs = append(exprs, sum)
	}
	eval := func(d bson.Raw, e bson.RawValue) bson.RawValue {
		if p, ok := e.StringValueOK(); ok && len(p) > 1 && p[0] == '$' {
			v, found := lookupPath(d, p[1:])
			if !found {
				return bson.RawValue{Type: bson.TypeNull}
			}
			return v
		}
		return e
	}
	var groups []*acc
	byKey := map[string]*acc{}
	for _, d := range docs {
		id := eval(d, idExpr)
		k := valueKey(id)
		g := byKey[k]
		if g == nil {
			g = &acc{id: id, sums: make([]bson.RawValue, len(exprs))}
			for i := range g.sums {
				g.sums[i] = mustValue(int32(0))
			}
			byKey[k] = g
			groups = append(groups, g)
		}
		for i, e := range exprs {
			if v := eval(d, e); isNumber(v) {
				g.sums[i] = arith("$inc", g.sums[i], v)
			}
		}
	}
	out := make([]bson.Raw, len(groups))
	for i, g := range groups {
		fs := []field{{key: "_id", val: g.id}}
		for j, n := range names {
			fs = append(fs, field{key: n, val: g.sums[j]})
		}
		out[i] = buildDoc(fs)
	}
	return out, nil
}

func prepDrop(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	return func(tx *txn) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, false)
		if c == nil {
			return bson.D{}, nil
		}
		if lockedIn(c) {
			return nil, blocked()
		}
		s.eng.dropColl(c)
		return bson.D{{Key: "ns", Value: c.ns()}, {Key: "nIndexesWas", Value: int32(1)}}, nil
	}, nil
}

func prepDropDatabase(s *Server, req *request) (op, *cmdError) {
	return func(tx *txn) (bson.D, *cmdError) {
		var colls []*collection
		for _, c := range s.eng.colls {
			if c.db == req.db {
				if lockedIn(c) {
					return nil, blocked()
				}
				colls = append(colls, c)
			}
		}
		for _, c := range colls {
			s.eng.dropColl(c)
		}
		return bson.D{{Key: "dropped", Value: req.db}}, nil
	}, nil
}

func prepCreate(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	return func(tx *txn) (bson.D, *cmdError) {
		s.eng.coll(req.db, req.coll, true)
		return bson.D{}, nil
	}, nil
}

func prepListCollections(s *Server, req *request) (op, *cmdError) {
	filter, err := docArg(req, "filter")
	if err != nil {
		return nil, err
	}
	return func(tx *txn) (bson.D, *cmdError) {
		var docs []bson.Raw
		for _, c := range s.eng.colls {
			if c.db != req.db {
				continue
			}
			d := buildDoc([]field{
				{key: "name", val: mustValue(c.name)},
				{key: "type", val: mustValue("collection")},
				{key: "options", val: docValue(buildDoc(nil))},
				{key: "info", val: docValue(buildDoc([]field{{key: "readOnly", val: mustValue(false)}}))},
			})
			ok, err := matches(d, filter)
			if err != nil {
				return nil, err
			}
			if ok {
				docs = append(docs, d)
			}
		}
		sortDocs(docs, buildDoc([]field{{key: "name", val: mustValue(int32(1))}}))
		return cursorReply(req.db+".$cmd.listCollections", docs), nil
	}, nil
}

func prepKillCursors(s *Server, req *request) (op, *cmdError) {
	var ids any = bson.A{}
	if v, err := req.body.LookupErr("cursors"); err == nil {
		ids = v
	}
	return func(tx *txn) (bson.D, *cmdError) {
		return bson.D{
			{Key: "cursorsKilled", Value: bson.A{}},
			{Key: "cursorsNotFound", Value: ids},
			{Key: "cursorsAlive", Value: bson.A{}},
			{Key: "cursorsUnknown", Value: bson.A{}},
		}, nil
	}, nil
}
