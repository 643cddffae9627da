package mongotest

import "go.mongodb.org/mongo-driver/v2/bson"

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
	return func(tx *transaction) (bson.D, *cmdError) {
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
