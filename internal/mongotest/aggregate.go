package mongotest

import (
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// stage runs one parsed aggregation stage over the documents of the
// previous one.
type stage func(docs []bson.Raw) ([]bson.Raw, *cmdError)

// supportedStages are the pipeline stages this package runs.
var supportedStages = []string{"$match", "$sort", "$skip", "$limit", "$project", "$addFields",
	"$set", "$unset", "$count", "$group", "$unwind", "$replaceRoot", "$replaceWith", "$sortByCount"}

// knownStages are the other stages of mongod 7.0: mongotest fails them as
// unsupported, and any other name as mongod fails an unknown stage.
var knownStages = []string{"$bucket", "$bucketAuto", "$changeStream", "$changeStreamSplitLargeEvent",
	"$collStats", "$currentOp", "$densify", "$documents", "$facet", "$fill", "$geoNear", "$graphLookup",
	"$indexStats", "$listLocalSessions", "$listSampledQueries", "$listSearchIndexes", "$listSessions",
	"$lookup", "$merge", "$out", "$planCacheStats", "$redact", "$sample", "$search", "$searchMeta",
	"$setWindowFields", "$shardedDataDistribution", "$unionWith", "$vectorSearch"}

// codeUnrecognizedStage is mongod's code (Location40324) for an unknown
// pipeline stage.
const codeUnrecognizedStage = 40324

// prepAggregate parses a pipeline of the stages in supportedStages; its
// expressions are those of evalExpr, its $group accumulators $sum, $avg,
// $min, $max, $first, $last, $push, $addToSet and $count.
func prepAggregate(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	specs, err := docsArg(req, "pipeline")
	if err != nil {
		return nil, err
	}
	stages := make([]stage, len(specs))
	for i, st := range specs {
		fs := fieldsOf(st)
		if len(fs) != 1 {
			return nil, errorf(40323, "A pipeline stage specification object must contain exactly one field.")
		}
		if stages[i], err = parseStage(fs[0]); err != nil {
			return nil, err
		}
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		items, err := s.candidates(s.eng.coll(req.db, req.coll, false), buildDoc(nil), tx)
		if err != nil {
			return nil, err
		}
		docs := docsOf(items)
		for _, st := range stages {
			if docs, err = st(docs); err != nil {
				return nil, err
			}
		}
		return cursorReply(req.db+"."+req.coll, docs), nil
	}, nil
}

// parseStage checks one stage and returns it.
func parseStage(st field) (stage, *cmdError) {
	switch st.key {
	case "$match":
		filter, ok := st.val.DocumentOK()
		if !ok {
			return nil, errorf(15959, "the match filter must be an expression in an object")
		}
		return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
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
		}, nil
	case "$sort":
		spec, ok := st.val.DocumentOK()
		if !ok || len(fieldsOf(spec)) == 0 {
			return nil, errorf(15973, "the $sort key specification must be an object")
		}
		if err := checkSort(spec); err != nil {
			return nil, err
		}
		return func(docs []bson.Raw) ([]bson.Raw, *cmdError) { return sorted(docs, spec), nil }, nil
	case "$skip", "$limit":
		if !isNumber(st.val) || asFloat(st.val) < 0 || st.key == "$limit" && asFloat(st.val) == 0 {
			return nil, errorf(15958, "invalid argument to %s stage: expected a positive number", st.key)
		}
		n := int64(asFloat(st.val))
		return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
			if st.key == "$skip" {
				return window(docs, n, 0), nil
			}
			return window(docs, 0, n), nil
		}, nil
	case "$project":
		spec, ok := st.val.DocumentOK()
		if !ok || len(fieldsOf(spec)) == 0 {
			return nil, errorf(40177, "Invalid $project :: caused by :: projection specification must have at least one field")
		}
		p, err := parseProjection(spec)
		if err != nil {
			return nil, err
		}
		return mapDocs(p.apply), nil
	case "$addFields", "$set":
		spec, ok := st.val.DocumentOK()
		if !ok {
			return nil, errorf(40272, "%s specification stage must be an object", st.key)
		}
		return mapDocs(func(d bson.Raw) (bson.Raw, *cmdError) { return addFields(d, spec) }), nil
	case "$unset":
		var paths []string
		if s, ok := st.val.StringValueOK(); ok {
			paths = []string{s}
		} else {
			for _, v := range arrayValues(st.val) {
				s, ok := v.StringValueOK()
				if !ok {
					return nil, errorf(31120, "$unset specification must be a string or an array containing only string values")
				}
				paths = append(paths, s)
			}
		}
		var fs []field
		for _, p := range paths {
			fs = append(fs, field{key: p, val: mustValue(int32(0))})
		}
		p, err := parseProjection(buildDoc(fs))
		if err != nil {
			return nil, err
		}
		return mapDocs(p.apply), nil
	case "$replaceRoot", "$replaceWith":
		expr := st.val
		if st.key == "$replaceRoot" {
			d, ok := st.val.DocumentOK()
			if !ok || d.Lookup("newRoot").Type == 0 {
				return nil, errorf(40231, "no newRoot specified for the $replaceRoot stage")
			}
			expr = d.Lookup("newRoot")
		}
		return mapDocs(func(d bson.Raw) (bson.Raw, *cmdError) {
			v, _, err := evalExpr(d, expr)
			if err != nil {
				return nil, err
			}
			nd, ok := v.DocumentOK()
			if !ok {
				return nil, errorf(40228, "'newRoot' expression must evaluate to an object, but resulting value was: %s. Type of resulting value: '%s'.", shellString(v), typeName(v.Type))
			}
			return nd, nil
		}), nil
	case "$count":
		name, ok := st.val.StringValueOK()
		if !ok || name == "" || strings.HasPrefix(name, "$") || strings.Contains(name, ".") {
			return nil, errorf(40156, "the count field must be a non-empty string, not start with '$' and not contain '.'")
		}
		return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
			if len(docs) == 0 {
				return nil, nil
			}
			return []bson.Raw{buildDoc([]field{{key: name, val: mustValue(int32(len(docs)))}})}, nil
		}, nil
	case "$group":
		return parseGroup(st.val)
	case "$sortByCount":
		g, err := parseGroup(docValue(buildDoc([]field{
			{key: "_id", val: st.val},
			{key: "count", val: docValue(buildDoc([]field{{key: "$sum", val: mustValue(int32(1))}}))},
		})))
		if err != nil {
			return nil, err
		}
		spec := buildDoc([]field{{key: "count", val: mustValue(int32(-1))}})
		return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
			out, err := g(docs)
			if err != nil {
				return nil, err
			}
			return sorted(out, spec), nil
		}, nil
	case "$unwind":
		return parseUnwind(st.val)
	}
	if slices.Contains(knownStages, st.key) {
		return nil, errorf(codeFailedToParse, "mongotest does not support the pipeline stage %s (it supports %s)", st.key, strings.Join(supportedStages, ", "))
	}
	return nil, errorf(codeUnrecognizedStage, "Unrecognized pipeline stage name: '%s'", st.key)
}

// mapDocs makes a stage of a per-document function.
func mapDocs(f func(bson.Raw) (bson.Raw, *cmdError)) stage {
	return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
		out := make([]bson.Raw, len(docs))
		for i, d := range docs {
			nd, err := f(d)
			if err != nil {
				return nil, err
			}
			out[i] = nd
		}
		return out, nil
	}
}

// addFields sets each field of spec, a dotted path with an expression, on
// d; a missing result removes the field.
func addFields(d, spec bson.Raw) (bson.Raw, *cmdError) {
	out := d
	for _, f := range fieldsOf(spec) {
		if f.key == "" || strings.HasPrefix(f.key, "$") {
			return nil, errorf(16410, "FieldPath field names may not start with '$'")
		}
		var v bson.RawValue
		var found bool
		var err *cmdError
		if sub, ok := f.val.DocumentOK(); ok {
			if _, isOps := isOperatorDoc(f.val); !isOps {
				// A nested document merges into an existing one.
				cur, _ := lookupPath(out, f.key)
				base, ok := cur.DocumentOK()
				if !ok {
					base = buildDoc(nil)
				}
				nd, err := addFields(base, sub)
				if err != nil {
					return nil, err
				}
				if out, err = setPath(out, strings.Split(f.key, "."), docValue(nd)); err != nil {
					return nil, err
				}
				continue
			}
		}
		v, found, err = evalExpr(d, f.val)
		if err != nil {
			return nil, err
		}
		parts := strings.Split(f.key, ".")
		if !found {
			out = unsetPath(out, parts)
			continue
		}
		if out, err = setPath(out, parts, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseUnwind parses $unwind: a path string, or {path,
// includeArrayIndex, preserveNullAndEmptyArrays}.
func parseUnwind(v bson.RawValue) (stage, *cmdError) {
	var path, indexField string
	preserve := false
	if s, ok := v.StringValueOK(); ok {
		path = s
	} else if d, ok := v.DocumentOK(); ok {
		path, _ = d.Lookup("path").StringValueOK()
		indexField, _ = d.Lookup("includeArrayIndex").StringValueOK()
		preserve, _ = d.Lookup("preserveNullAndEmptyArrays").BooleanOK()
	} else {
		return nil, errorf(15981, "expected either a string or an object as specification for $unwind stage")
	}
	if !strings.HasPrefix(path, "$") || len(path) < 2 {
		return nil, errorf(28818, "path option to $unwind stage should be prefixed with a '$': %s", path)
	}
	parts := strings.Split(path[1:], ".")
	return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
		var out []bson.Raw
		for _, d := range docs {
			cur, found := lookupPath(d, path[1:])
			emit := func(val bson.RawValue, idx any) *cmdError {
				nd := d
				var err *cmdError
				if val.Type == 0 {
					nd = unsetPath(nd, parts)
				} else if nd, err = setPath(nd, parts, val); err != nil {
					return err
				}
				if indexField != "" {
					if nd, err = setPath(nd, strings.Split(indexField, "."), mustValue(idx)); err != nil {
						return err
					}
				}
				out = append(out, nd)
				return nil
			}
			switch {
			case found && cur.Type == bson.TypeArray && len(arrayValues(cur)) > 0:
				for i, e := range arrayValues(cur) {
					if err := emit(e, int64(i)); err != nil {
						return nil, err
					}
				}
			case found && cur.Type == bson.TypeArray, !found, cur.Type == bson.TypeNull:
				if preserve {
					var val bson.RawValue
					if found && cur.Type == bson.TypeNull {
						val = cur
					}
					if err := emit(val, nil); err != nil {
						return nil, err
					}
				}
			default:
				if err := emit(cur, nil); err != nil {
					return nil, err
				}
			}
		}
		return out, nil
	}, nil
}

// groupAccumulators are the accumulators $group supports.
var groupAccumulators = []string{"$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$count"}

// parseGroup parses a $group stage.
func parseGroup(spec bson.RawValue) (stage, *cmdError) {
	sd, ok := spec.DocumentOK()
	if !ok {
		return nil, errorf(15947, "a group's fields must be specified in an object")
	}
	idExpr, err := sd.LookupErr("_id")
	if err != nil {
		return nil, errorf(15955, "a group specification must include an _id")
	}
	type accSpec struct {
		name, op string
		expr     bson.RawValue
	}
	var accs []accSpec
	for _, f := range fieldsOf(sd) {
		if f.key == "_id" {
			continue
		}
		if strings.Contains(f.key, ".") {
			return nil, errorf(40235, "The field name '%s' cannot contain '.'", f.key)
		}
		a, ok := f.val.DocumentOK()
		fs := fieldsOf(a)
		if !ok || len(fs) != 1 {
			return nil, errorf(40234, "The field '%s' must be an accumulator object", f.key)
		}
		if !slices.Contains(groupAccumulators, fs[0].key) {
			return nil, errorf(15952, "unknown group operator '%s' (mongotest supports %s)", fs[0].key, strings.Join(groupAccumulators, ", "))
		}
		accs = append(accs, accSpec{name: f.key, op: fs[0].key, expr: fs[0].val})
	}
	return func(docs []bson.Raw) ([]bson.Raw, *cmdError) {
		type group struct {
			id   bson.RawValue
			accs []*accumulator
		}
		var groups []*group
		byKey := map[string]*group{}
		for _, d := range docs {
			id, found, err := evalExpr(d, idExpr)
			if err != nil {
				return nil, err
			}
			if !found {
				id = nullValue
			}
			k := groupKey(id)
			g := byKey[k]
			if g == nil {
				g = &group{id: id}
				for _, a := range accs {
					g.accs = append(g.accs, newAccumulator(a.op))
				}
				byKey[k] = g
				groups = append(groups, g)
			}
			for i, a := range accs {
				if a.op == "$count" {
					g.accs[i].add(nullValue)
					continue
				}
				v, found, err := evalExpr(d, a.expr)
				if err != nil {
					return nil, err
				}
				switch {
				case found:
					g.accs[i].add(v)
				case a.op == "$first" || a.op == "$last":
					g.accs[i].add(nullValue)
				}
			}
		}
		out := make([]bson.Raw, len(groups))
		for i, g := range groups {
			fs := []field{{key: "_id", val: g.id}}
			for j, a := range accs {
				fs = append(fs, field{key: a.name, val: g.accs[j].result()})
			}
			out[i] = buildDoc(fs)
		}
		return out, nil
	}, nil
}

// groupKey identifies a group _id: values that compare equal share a key.
func groupKey(v bson.RawValue) string {
	switch v.Type {
	case bson.TypeEmbeddedDocument, bson.TypeArray:
		var b strings.Builder
		for _, f := range fieldsOf(bson.Raw(v.Value)) {
			b.WriteString(f.key)
			b.WriteByte(0)
			b.WriteString(groupKey(f.val))
			b.WriteByte(1)
		}
		return string([]byte{byte(v.Type)}) + b.String()
	case bson.TypeNull, bson.TypeUndefined:
		return "null"
	}
	return valueKey(v)
}
