package mongotest

import (
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// candidates returns the documents of c matching filter as seen by tx,
// looking a plain _id equality up directly.
func (s *Server) candidates(c *collection, filter bson.Raw, tx *transaction) ([]item, *cmdError) {
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
func (s *Server) idLookup(c *collection, filter bson.Raw, tx *transaction) []item {
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
	filter, sortSpec, projSpec := args[0], args[1], args[2]
	skip, limit, err := windowArgs(req)
	if err != nil {
		return nil, err
	}
	proj, err := parseProjection(projSpec)
	if err != nil {
		return nil, err
	}
	if err := checkSort(sortSpec); err != nil {
		return nil, err
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), filter, tx)
		if err != nil {
			return nil, err
		}
		docs := docsOf(items)
		if natural(sortSpec) < 0 || natural(req.body.Lookup("hint").Value) < 0 {
			slices.Reverse(docs)
		}
		docs = window(sorted(docs, sortSpec), skip, limit)
		for i, d := range docs {
			if docs[i], err = proj.apply(d); err != nil {
				return nil, err
			}
		}
		return cursorReply(req.db+"."+req.coll, docs), nil
	}, nil
}

// sorted sorts docs by spec and returns them.
// natural returns the direction of a {$natural: 1 or -1} sort or hint, 0
// for anything else.
func natural(spec bson.Raw) int {
	v, err := spec.LookupErr("$natural")
	if err != nil || !isNumber(v) {
		return 0
	}
	if asFloat(v) < 0 {
		return -1
	}
	return 1
}

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

// docsOf returns the documents of items.
func docsOf(items []item) []bson.Raw {
	docs := make([]bson.Raw, len(items))
	for i, it := range items {
		docs[i] = it.doc
	}
	return docs
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
	return func(tx *transaction) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), q, tx)
		if err != nil {
			return nil, err
		}
		return bson.D{{Key: "n", Value: int64(len(window(docsOf(items), skip, limit)))}}, nil
	}, nil
}

// prepDistinct runs distinct: the distinct values of key among the
// documents matching query, array elements counted one by one, in the
// order first met.
func prepDistinct(s *Server, req *request) (op, *cmdError) {
	args, err := collDocArgs(req, "query")
	if err != nil {
		return nil, err
	}
	q := args[0]
	key, ok := req.body.Lookup("key").StringValueOK()
	if !ok {
		return nil, errorf(codeTypeMismatch, "BSON field 'distinct.key' is missing or not a string")
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), q, tx)
		if err != nil {
			return nil, err
		}
		var vals []bson.RawValue
		add := func(v bson.RawValue) {
			for _, x := range vals {
				if compareValues(x, v) == 0 && typeOrder(x.Type) == typeOrder(v.Type) {
					return
				}
			}
			vals = append(vals, v)
		}
		for _, it := range items {
			for _, v := range pathValues(it.doc, key) {
				if v.Type == bson.TypeArray {
					for _, e := range arrayValues(v) {
						add(e)
					}
					continue
				}
				add(v)
			}
		}
		return bson.D{{Key: "values", Value: buildArray(vals)}}, nil
	}, nil
}
