package mongotest

import (
	"bytes"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// writeError builds one entry of writeErrors.
func writeError(index int, err *cmdError) bson.D {
	d := bson.D{
		{Key: "index", Value: int32(index)},
		{Key: "code", Value: err.code},
	}
	if name := codeName(err.code); name != "" {
		d = append(d, bson.E{Key: "codeName", Value: name})
	}
	d = append(d, err.details...)
	return append(d, bson.E{Key: "errmsg", Value: err.msg})
}

// duplicateKey is mongod's DuplicateKey error for the _id index, with the
// keyPattern and keyValue fields it adds to the write error.
func duplicateKey(ns string, id bson.RawValue) *cmdError {
	err := errorf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: _id_ dup key: { _id: %s }", ns, shellString(id))
	err.details = bson.D{
		{Key: "keyPattern", Value: bson.D{{Key: "_id", Value: int32(1)}}},
		{Key: "keyValue", Value: bson.D{{Key: "_id", Value: id}}},
	}
	return err
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
	inTxn       bool
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
	return stmts, &writeBatch{n: len(stmts), ordered: ordered, inTxn: req.inTxn}, nil
}

// run calls stmt for each statement not yet done. stmt returns werr for a
// statement error, err to stop the command (write conflict, or wait for a
// lock, after which run resumes at the same statement). A statement error
// ends an ordered batch, and any batch in a transaction: mongod fails the
// whole batch there, ordered or not, and aborts the transaction.
func (b *writeBatch) run(stmt func(i int) (werr, err *cmdError)) *cmdError {
	for ; b.next < b.n; b.next++ {
		werr, err := stmt(b.next)
		if err != nil {
			return err
		}
		if werr != nil {
			b.writeErrors = append(b.writeErrors, writeError(b.next, werr))
			if b.ordered || b.inTxn {
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

// insertNew writes doc, which must not exist yet, into c. werr reports a
// duplicate _id; err a write conflict or a lock to wait for.
func (s *Server) insertNew(c *collection, ns string, doc bson.Raw, tx *transaction) (id bson.RawValue, werr, err *cmdError) {
	id = doc.Lookup("_id")
	key := valueKey(id)
	r, cur := s.eng.lookup(c, key, tx)
	if cur != nil {
		return id, duplicateKey(ns, id), nil
	}
	if err := canWrite(r, tx); err != nil {
		return id, nil, err
	}
	if werr, err := s.eng.checkUnique(c, key, doc, tx, nil); werr != nil || err != nil {
		return id, werr, err
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
	return func(tx *transaction) (bson.D, *cmdError) {
		c, err := s.eng.createColl(req.db, req.coll, tx)
		if err != nil {
			return nil, err
		}
		err = b.run(func(i int) (werr, err *cmdError) {
			d := ensureID(docs[i])
			if id := d.Lookup("_id"); id.Type == bson.TypeArray || id.Type == bson.TypeRegex || id.Type == bson.TypeUndefined {
				return errorf(codeInvalidIDField, "The '_id' value cannot be of type %s", typeName(id.Type)), nil
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
	base := buildDoc(nil)
	for _, f := range equalityFields(q) {
		if _, isOps := isOperatorDoc(f.val); isOps {
			continue
		}
		var err *cmdError
		if base, err = setPath(base, strings.Split(f.key, "."), f.val); err != nil {
			return nil, err
		}
	}
	if ud, ok := u.DocumentOK(); ok && isReplacement(ud) {
		// A replacement keeps only the query's _id, which it may not
		// change.
		idOnly := buildDoc(nil)
		if id, err := base.LookupErr("_id"); err == nil {
			idOnly = buildDoc([]field{{key: "_id", val: id}})
		}
		doc, err := applyUpdate(idOnly, u, true, now)
		if err != nil {
			return nil, err
		}
		return ensureID(doc), nil
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
	return func(tx *transaction) (bson.D, *cmdError) {
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
func (s *Server) updateOne(req *request, ns string, q bson.Raw, u bson.RawValue, upsert, multi bool, tx *transaction) (n, modified int, upsertedID bson.RawValue, werr, err *cmdError) {
	now := time.Now()
	c := s.eng.coll(req.db, req.coll, false)
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
		c, err := s.eng.createColl(req.db, req.coll, tx)
		if err != nil {
			return 0, 0, bson.RawValue{}, nil, err
		}
		id, werr, err := s.insertNew(c, ns, doc, tx)
		if werr != nil || err != nil {
			return 0, 0, bson.RawValue{}, werr, err
		}
		return 1, 0, id, nil, nil
	}
	var changes []pendingWrite
	for _, it := range items {
		nd, uerr := applyUpdateQ(it.doc, u, q, false, now)
		if uerr != nil {
			return 0, 0, bson.RawValue{}, uerr, nil
		}
		if bytes.Equal(nd, it.doc) {
			continue
		}
		if err := canWrite(it.rec, tx); err != nil {
			return 0, 0, bson.RawValue{}, nil, err
		}
		if werr, err := s.eng.checkUnique(c, it.rec.key, nd, tx, changes); werr != nil || err != nil {
			return 0, 0, bson.RawValue{}, werr, err
		}
		changes = append(changes, pendingWrite{key: it.rec.key, doc: nd})
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
	return func(tx *transaction) (bson.D, *cmdError) {
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
	q, sortSpec, fieldsSpec := args[0], args[1], args[2]
	fields, err := parseProjection(fieldsSpec)
	if err != nil {
		return nil, err
	}
	if err := checkSort(sortSpec); err != nil {
		return nil, err
	}
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
	return func(tx *transaction) (bson.D, *cmdError) {
		now := time.Now()
		c := s.eng.coll(req.db, req.coll, false)
		items, err := s.candidates(c, q, tx)
		if err != nil {
			return nil, err
		}
		if len(items) > 1 {
			sortBy(items, func(it item) bson.Raw { return it.doc }, sortSpec)
		}
		reply := func(n int, updatedExisting bool, upserted bson.RawValue, value bson.Raw) (bson.D, *cmdError) {
			leo := bson.D{{Key: "n", Value: int32(n)}}
			if !remove {
				leo = append(leo, bson.E{Key: "updatedExisting", Value: updatedExisting})
			}
			if upserted.Type != 0 {
				leo = append(leo, bson.E{Key: "upserted", Value: upserted})
			}
			var v any
			if value != nil {
				pv, err := fields.apply(value)
				if err != nil {
					return nil, err
				}
				v = pv
			}
			return bson.D{{Key: "lastErrorObject", Value: leo}, {Key: "value", Value: v}}, nil
		}
		if len(items) == 0 {
			if !upsert {
				return reply(0, false, bson.RawValue{}, nil)
			}
			doc, err := upsertDoc(q, u, now)
			if err != nil {
				return nil, err
			}
			if c, err = s.eng.createColl(req.db, req.coll, tx); err != nil {
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
			return reply(1, false, id, value)
		}
		it := items[0]
		if remove {
			if err := canWrite(it.rec, tx); err != nil {
				return nil, err
			}
			s.eng.write(c, it.rec.key, nil, tx)
			return reply(1, false, bson.RawValue{}, it.doc)
		}
		nd, err := applyUpdateQ(it.doc, u, q, false, now)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(nd, it.doc) {
			if err := canWrite(it.rec, tx); err != nil {
				return nil, err
			}
			werr, err := s.eng.checkUnique(c, it.rec.key, nd, tx, nil)
			if werr != nil {
				return nil, werr
			}
			if err != nil {
				return nil, err
			}
			s.eng.write(c, it.rec.key, nd, tx)
		}
		value := it.doc
		if returnNew {
			value = nd
		}
		return reply(1, true, bson.RawValue{}, value)
	}, nil
}
