package mongotest

import (
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// index is a secondary index of a collection. Only unique indexes change
// behaviour: a write that would give two documents the same key fails with
// DuplicateKey (11000), as in mongod. A missing field indexes as null
// unless the index is sparse; an array indexes each of its elements.
type index struct {
	name   string
	spec   bson.Raw // the key pattern
	fields []string
	unique bool
	sparse bool
}

// indexKeys returns the keys doc has in ix (several for arrays), and
// false when a sparse index leaves doc out.
func (ix *index) indexKeys(doc bson.Raw) ([][]bson.RawValue, bool) {
	keys := [][]bson.RawValue{nil}
	present := false
	for _, f := range ix.fields {
		vals := pathValues(doc, f)
		var elems []bson.RawValue
		for _, v := range vals {
			if v.Type == bson.TypeArray {
				elems = append(elems, arrayValues(v)...)
				continue
			}
			elems = append(elems, v)
		}
		if len(elems) == 0 {
			elems = []bson.RawValue{nullValue}
		} else {
			present = true
		}
		var next [][]bson.RawValue
		for _, k := range keys {
			for _, e := range elems {
				next = append(next, append(slices.Clip(k), e))
			}
		}
		keys = next
	}
	if ix.sparse && !present {
		return nil, false
	}
	return keys, true
}

// sharesKey reports whether a and b have a key in common in ix, and which.
func (ix *index) sharesKey(a, b bson.Raw) ([]bson.RawValue, bool) {
	if a == nil || b == nil {
		return nil, false
	}
	ka, okA := ix.indexKeys(a)
	kb, okB := ix.indexKeys(b)
	if !okA || !okB {
		return nil, false
	}
	for _, x := range ka {
		for _, y := range kb {
			if slices.EqualFunc(x, y, func(p, q bson.RawValue) bool { return compareValues(p, q) == 0 }) {
				return x, true
			}
		}
	}
	return nil, false
}

// dupKeyError is mongod's DuplicateKey error for ix.
func (ix *index) dupKeyError(ns string, key []bson.RawValue) *cmdError {
	parts := make([]string, len(key))
	kv := bson.D{}
	for i, v := range key {
		parts[i] = ix.fields[i] + ": " + shellString(v)
		kv = append(kv, bson.E{Key: ix.fields[i], Value: v})
	}
	err := errorf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: %s dup key: { %s }", ns, ix.name, strings.Join(parts, ", "))
	err.details = bson.D{{Key: "keyPattern", Value: ix.spec}, {Key: "keyValue", Value: kv}}
	return err
}

// pendingWrite is a document a statement is about to write.
type pendingWrite struct {
	key string
	doc bson.Raw
}

// checkUnique checks that writing doc under key in c for tx (nil: outside
// a transaction) keeps every unique index unique, counting the writes
// earlier in the same statement. werr is a DuplicateKey against a document
// the writer can see; err a WriteConflict (another transaction holds, or
// committed after the snapshot, a document with the key) or, outside a
// transaction, a lock to wait for.
func (e *engine) checkUnique(c *collection, key string, doc bson.Raw, tx *transaction, earlier []pendingWrite) (werr, err *cmdError) {
	for _, ix := range c.indexes {
		if !ix.unique {
			continue
		}
		for _, w := range earlier {
			if w.key != key && w.doc != nil {
				if k, dup := ix.sharesKey(doc, w.doc); dup {
					return ix.dupKeyError(c.ns(), k), nil
				}
			}
		}
		for _, r := range c.order {
			if r.gone || r.key == key || slices.ContainsFunc(earlier, func(w pendingWrite) bool { return w.key == r.key }) {
				continue
			}
			if r.lockedBy != nil && r.lockedBy != tx {
				_, a := ix.sharesKey(doc, r.latest())
				_, b := ix.sharesKey(doc, r.lockedBy.pending[r])
				if a || b {
					if tx == nil {
						return nil, blocked()
					}
					return nil, writeConflict()
				}
			}
			if vis := visible(r, tx); vis != nil {
				if k, dup := ix.sharesKey(doc, vis); dup {
					return ix.dupKeyError(c.ns(), k), nil
				}
			}
			if tx != nil && r.latestTS() > tx.snapshot {
				if _, dup := ix.sharesKey(doc, r.latest()); dup {
					return nil, writeConflict()
				}
			}
		}
	}
	return nil, nil
}

// indexName is the name mongod gives a key pattern: field_dir joined by _.
func indexName(spec bson.Raw) string {
	var parts []string
	for _, f := range fieldsOf(spec) {
		parts = append(parts, f.key, strings.TrimSuffix(strings.TrimSuffix(rawString(f.val), ".0"), ".000000"))
	}
	return strings.Join(parts, "_")
}

func rawString(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	return shellString(v)
}

// Index error codes.
const (
	codeIndexOptionsConflict  = 85
	codeIndexKeySpecsConflict = 86
	codeIndexNotFound         = 27
	codeCannotCreateIndex     = 67
)

func prepCreateIndexes(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	specs, err := docsArg(req, "indexes")
	if err != nil {
		return nil, err
	}
	var want []*index
	for _, sp := range specs {
		key, ok := sp.Lookup("key").DocumentOK()
		if !ok || len(fieldsOf(key)) == 0 {
			return nil, errorf(codeCannotCreateIndex, "Index keys cannot be an empty field.")
		}
		ix := &index{spec: key}
		for _, f := range fieldsOf(key) {
			if !isNumber(f.val) || asFloat(f.val) == 0 {
				return nil, errorf(codeCannotCreateIndex, "mongotest supports only ascending and descending index keys, not %s: %s", f.key, shellString(f.val))
			}
			ix.fields = append(ix.fields, f.key)
		}
		for _, f := range fieldsOf(sp) {
			switch f.key {
			case "key", "v", "background":
			case "name":
				ix.name, _ = f.val.StringValueOK()
			case "unique":
				ix.unique = truthy(f.val)
			case "sparse":
				ix.sparse = truthy(f.val)
			default:
				return nil, errorf(codeCannotCreateIndex, "mongotest does not support the index option %s", f.key)
			}
		}
		if ix.name == "" {
			ix.name = indexName(key)
		}
		want = append(want, ix)
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		existed := s.eng.coll(req.db, req.coll, false).exists()
		c, err := s.eng.createColl(req.db, req.coll, tx)
		if err != nil {
			return nil, err
		}
		before := len(c.indexes) + 1
		var added []*index
		for _, ix := range want {
			if len(ix.fields) == 1 && ix.fields[0] == "_id" && !ix.sparse {
				continue // the _id index exists already
			}
			if old := c.indexByName(ix.name); old != nil || ix.name == "_id_" {
				if old != nil && compareDocs(old.spec, ix.spec, true) == 0 && old.unique == ix.unique && old.sparse == ix.sparse {
					continue
				}
				if old != nil && compareDocs(old.spec, ix.spec, true) == 0 {
					return nil, errorf(codeIndexOptionsConflict, "An existing index has the same name as the requested index. Requested index: %s, existing index: %s", ix.name, old.name)
				}
				return nil, errorf(codeIndexKeySpecsConflict, "An existing index has the same name as the requested index but different key specs: %s", ix.name)
			}
			if ix.unique {
				if err := s.eng.checkExistingUnique(c, ix); err != nil {
					return nil, err
				}
			}
			added = append(added, ix)
		}
		c.indexes = append(c.indexes, added...)
		return bson.D{
			{Key: "numIndexesBefore", Value: int32(before)},
			{Key: "numIndexesAfter", Value: int32(len(c.indexes) + 1)},
			{Key: "createdCollectionAutomatically", Value: !existed},
		}, nil
	}, nil
}

// checkExistingUnique fails with DuplicateKey when the committed documents
// of c already break the unique index ix, and waits while a transaction
// holds a document of c.
func (e *engine) checkExistingUnique(c *collection, ix *index) *cmdError {
	if lockedIn(c) && c.createdBy == nil {
		return blocked()
	}
	docs := e.scan(c, nil)
	for i := range docs {
		for j := i + 1; j < len(docs); j++ {
			if k, dup := ix.sharesKey(docs[i].doc, docs[j].doc); dup {
				return ix.dupKeyError(c.ns(), k)
			}
		}
	}
	return nil
}

func (c *collection) indexByName(name string) *index {
	for _, ix := range c.indexes {
		if ix.name == name {
			return ix
		}
	}
	return nil
}

func prepListIndexes(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, false)
		if !c.exists() {
			return nil, errorf(26, "ns does not exist: %s.%s", req.db, req.coll)
		}
		docs := []bson.Raw{buildDoc([]field{
			{key: "v", val: mustValue(int32(2))},
			{key: "key", val: docValue(buildDoc([]field{{key: "_id", val: mustValue(int32(1))}}))},
			{key: "name", val: mustValue("_id_")},
		})}
		for _, ix := range c.indexes {
			fs := []field{
				{key: "v", val: mustValue(int32(2))},
				{key: "key", val: docValue(ix.spec)},
				{key: "name", val: mustValue(ix.name)},
			}
			if ix.unique {
				fs = append(fs, field{key: "unique", val: mustValue(true)})
			}
			if ix.sparse {
				fs = append(fs, field{key: "sparse", val: mustValue(true)})
			}
			docs = append(docs, buildDoc(fs))
		}
		return cursorReply(req.db+"."+req.coll, docs), nil
	}, nil
}

func prepDropIndexes(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	target := req.body.Lookup("index")
	return func(tx *transaction) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, false)
		if !c.exists() {
			return nil, errorf(26, "ns not found %s.%s", req.db, req.coll)
		}
		before := int32(len(c.indexes) + 1)
		var names []string
		if n, ok := target.StringValueOK(); ok {
			names = []string{n}
		} else if spec, ok := target.DocumentOK(); ok {
			for _, ix := range c.indexes {
				if compareDocs(ix.spec, spec, true) == 0 {
					names = append(names, ix.name)
				}
			}
			if len(names) == 0 {
				return nil, errorf(codeIndexNotFound, "can't find index with key: %s", shellString(target))
			}
		} else {
			for _, v := range arrayValues(target) {
				if n, ok := v.StringValueOK(); ok {
					names = append(names, n)
				}
			}
		}
		if slices.Contains(names, "*") {
			c.indexes = nil
			return bson.D{{Key: "nIndexesWas", Value: before}}, nil
		}
		for _, n := range names {
			if n == "_id_" {
				return nil, errorf(72, "cannot drop _id index")
			}
			if c.indexByName(n) == nil {
				return nil, errorf(codeIndexNotFound, "index not found with name [%s]", n)
			}
		}
		c.indexes = slices.DeleteFunc(c.indexes, func(ix *index) bool { return slices.Contains(names, ix.name) })
		return bson.D{{Key: "nIndexesWas", Value: before}}, nil
	}, nil
}
