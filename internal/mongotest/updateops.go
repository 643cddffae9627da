package mongotest

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// updateOp is one field of one update operator: {$op: {path: arg}}.
type updateOp struct {
	op    string
	path  string
	parts []string
	arg   bson.RawValue
}

// supportedUpdateOps are the update operators this package applies.
var supportedUpdateOps = []string{"$set", "$unset", "$inc", "$mul", "$min", "$max", "$setOnInsert",
	"$currentDate", "$push", "$addToSet", "$pull", "$pullAll", "$pop", "$rename"}

// parseUpdateOps checks an update document of operators and returns its
// operations in the order mongod (5.0 and later) applies them: by path,
// string parts lexicographically, numeric parts numerically. Two paths
// that are equal, or one a prefix of the other, conflict
// (ConflictingUpdateOperators, 40), as in mongod.
func parseUpdateOps(u bson.Raw) ([]updateOp, *cmdError) {
	var ops []updateOp
	for _, opf := range fieldsOf(u) {
		if !slices.Contains(supportedUpdateOps, opf.key) {
			if opf.key == "$bit" {
				return nil, errorf(codeFailedToParse, "mongotest does not support the update operator %s", opf.key)
			}
			return nil, errorf(codeFailedToParse, "Unknown modifier: %s. Expected a valid update modifier or pipeline-style update specified as an array", opf.key)
		}
		args, ok := opf.val.DocumentOK()
		if !ok {
			return nil, errorf(codeFailedToParse, "Modifiers operate on fields but we found type %s instead. For example: {$mod: {<field>: ...}} not {%s: %s}", typeName(opf.val.Type), opf.key, shellString(opf.val))
		}
		for _, a := range fieldsOf(args) {
			paths := []string{a.key}
			if opf.key == "$rename" {
				to, ok := a.val.StringValueOK()
				if !ok {
					return nil, errorf(codeBadValue, "The 'to' field for $rename must be a string: %s: %s", a.key, shellString(a.val))
				}
				if to == a.key {
					return nil, errorf(codeBadValue, "The source and target field for $rename must differ: %s: %q", a.key, to)
				}
				paths = append(paths, to)
			}
			for _, p := range paths {
				if err := checkUpdatePath(p); err != nil {
					return nil, err
				}
				if err := conflicts(ops, p); err != nil {
					return nil, err
				}
			}
			ops = append(ops, updateOp{op: opf.key, path: a.key, parts: strings.Split(a.key, "."), arg: a.val})
		}
	}
	slices.SortStableFunc(ops, func(x, y updateOp) int { return comparePaths(x.parts, y.parts) })
	return ops, nil
}

// conflicts returns ConflictingUpdateOperators when path p is, or is a
// prefix of, or has as a prefix, a path of ops.
func conflicts(ops []updateOp, p string) *cmdError {
	parts := strings.Split(p, ".")
	for _, prev := range ops {
		prevPaths := [][]string{prev.parts}
		if prev.op == "$rename" {
			to, _ := prev.arg.StringValueOK()
			prevPaths = append(prevPaths, strings.Split(to, "."))
		}
		for _, pp := range prevPaths {
			if n := min(len(pp), len(parts)); slices.Equal(pp[:n], parts[:n]) {
				return errorf(codeConflictingUpdateOperators, "Updating the path '%s' would create a conflict at '%s'", p, strings.Join(parts[:n], "."))
			}
		}
	}
	return nil
}

// checkUpdatePath rejects empty path parts, and the filtered positional
// operator $[<identifier>], which this package does not support; $ and $[]
// are supported.
func checkUpdatePath(p string) *cmdError {
	parts := strings.Split(p, ".")
	for i, part := range parts {
		if part == "" {
			return errorf(codeEmptyFieldName, "The update path '%s' contains an empty field name, which is not allowed.", p)
		}
		if strings.HasPrefix(part, "$") {
			if part != "$" && part != "$[]" {
				return errorf(codeBadValue, "mongotest does not support the positional operator %s (in the update path '%s')", part, p)
			}
			if i == 0 {
				return errorf(codeBadValue, "Cannot have array filter identifier (i.e. '$[<id>]') element in the first position in path '%s'", p)
			}
		}
	}
	return nil
}

// expandPositional replaces the positional parts of the update paths with
// the array indexes they stand for in doc: $ with the index of the first
// element that matched the query q (mongod's rule), $[] with every index.
func expandPositional(ops []updateOp, doc, q bson.Raw) ([]updateOp, *cmdError) {
	var out []updateOp
	expanded := false
	for _, o := range ops {
		if !slices.ContainsFunc(o.parts, func(p string) bool { return p == "$" || p == "$[]" }) {
			out = append(out, o)
			continue
		}
		expanded = true
		paths, err := expandParts(doc, q, o.parts, nil)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			out = append(out, updateOp{op: o.op, path: strings.Join(p, "."), parts: p, arg: o.arg})
		}
	}
	if expanded {
		slices.SortStableFunc(out, func(x, y updateOp) int { return comparePaths(x.parts, y.parts) })
	}
	return out, nil
}

func expandParts(doc, q bson.Raw, parts, prefix []string) ([][]string, *cmdError) {
	for i, p := range parts {
		if p != "$" && p != "$[]" {
			continue
		}
		arrPath := append(slices.Clone(prefix), parts[:i]...)
		arr, found := lookupPath(doc, strings.Join(arrPath, "."))
		if p == "$" {
			idx, ok := positionalIndex(doc, q, arrPath, arr)
			if !ok {
				return nil, errorf(codeBadValue, "The positional operator did not find the match needed from the query.")
			}
			return expandParts(doc, q, parts[i+1:], append(arrPath, strconv.Itoa(idx)))
		}
		if !found || arr.Type != bson.TypeArray {
			return nil, errorf(codeBadValue, "The path '%s' must exist in the document in order to apply array updates.", strings.Join(arrPath, "."))
		}
		var out [][]string
		for j := range arrayValues(arr) {
			sub, err := expandParts(doc, q, parts[i+1:], append(slices.Clone(arrPath), strconv.Itoa(j)))
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
		return out, nil
	}
	return [][]string{append(slices.Clone(prefix), parts...)}, nil
}

// positionalIndex returns the index of the first element of the array arr,
// at arrPath in doc, for which the conditions of q on that array hold.
func positionalIndex(doc, q bson.Raw, arrPath []string, arr bson.RawValue) (int, bool) {
	if q == nil || arr.Type != bson.TypeArray {
		return 0, false
	}
	path := strings.Join(arrPath, ".")
	var conds []field
	for _, f := range fieldsOf(q) {
		if f.key == path || strings.HasPrefix(f.key, path+".") {
			conds = append(conds, f)
		}
	}
	if len(conds) == 0 {
		return 0, false
	}
	filter := buildDoc(conds)
	for i, e := range arrayValues(arr) {
		one, err := setPath(doc, arrPath, buildArray([]bson.RawValue{e}))
		if err != nil {
			return 0, false
		}
		if m, err := matches(one, filter); err == nil && m {
			return i, true
		}
	}
	return 0, false
}

// comparePaths orders update paths as mongod 5.0 applies them.
func comparePaths(a, b []string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		x, xerr := strconv.Atoi(a[i])
		y, yerr := strconv.Atoi(b[i])
		var c int
		if xerr == nil && yerr == nil {
			c = cmp.Compare(x, y)
		} else {
			c = strings.Compare(a[i], b[i])
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

func applyOperator(doc bson.Raw, o updateOp, insert bool, now time.Time) (bson.Raw, *cmdError) {
	op, path, parts, arg := o.op, o.path, o.parts, o.arg
	cur, found := lookupPath(doc, path)
	switch op {
	case "$set":
		return setPath(doc, parts, arg)
	case "$setOnInsert":
		if !insert {
			return doc, nil
		}
		return setPath(doc, parts, arg)
	case "$unset":
		return unsetPath(doc, parts), nil
	case "$inc", "$mul":
		if !isNumber(arg) {
			return nil, errorf(codeTypeMismatch, "Cannot %s with non-numeric argument: {%s: %s}", op[1:], path, shellString(arg))
		}
		if found && !isNumber(cur) {
			return nil, errorf(codeTypeMismatch, "Cannot apply %s to a value of non-numeric type. {_id: %s} has the field '%s' of non-numeric type %s", op, shellString(doc.Lookup("_id")), path, typeName(cur.Type))
		}
		if !found {
			if op == "$mul" {
				return setPath(doc, parts, arith("$mul", mustValue(int32(0)), arg))
			}
			return setPath(doc, parts, arg)
		}
		return setPath(doc, parts, arith(op, cur, arg))
	case "$min", "$max":
		c := compareValues(arg, cur)
		if !found || (op == "$min" && c < 0) || (op == "$max" && c > 0) {
			return setPath(doc, parts, arg)
		}
		return doc, nil
	case "$currentDate":
		v := mustValue(bson.NewDateTimeFromTime(now))
		if d, ok := arg.DocumentOK(); ok {
			switch t, _ := d.Lookup("$type").StringValueOK(); t {
			case "timestamp":
				v = mustValue(bson.Timestamp{T: uint32(now.Unix()), I: 1})
			case "date":
			default:
				return nil, errorf(codeBadValue, "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}")
			}
		} else if _, ok := arg.BooleanOK(); !ok {
			return nil, errorf(codeBadValue, "%s is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({$type: 'timestamp/date'}).", typeName(arg.Type))
		}
		return setPath(doc, parts, v)
	case "$rename":
		if !found {
			return doc, nil
		}
		to, _ := arg.StringValueOK()
		return setPath(unsetPath(doc, parts), strings.Split(to, "."), cur)
	}
	// The array operators.
	if found && cur.Type != bson.TypeArray {
		return nil, errorf(codeBadValue, "The field '%s' must be an array but is of type %s in document {_id: %s}", path, typeName(cur.Type), shellString(doc.Lookup("_id")))
	}
	vals := arrayValues(cur)
	switch op {
	case "$push":
		return push(doc, parts, vals, arg)
	case "$addToSet":
		add := []bson.RawValue{arg}
		if d, ok := arg.DocumentOK(); ok {
			if each, err := d.LookupErr("$each"); err == nil {
				if each.Type != bson.TypeArray {
					return nil, errorf(codeTypeMismatch, "The argument to $each in $addToSet must be an array but it was of type %s", typeName(each.Type))
				}
				add = arrayValues(each)
			}
		}
		for _, v := range add {
			if !slices.ContainsFunc(vals, func(x bson.RawValue) bool { return compareValues(x, v) == 0 }) {
				vals = append(vals, v)
			}
		}
		return setPath(doc, parts, buildArray(vals))
	case "$pop":
		if !isNumber(arg) || (asFloat(arg) != 1 && asFloat(arg) != -1) {
			return nil, errorf(codeFailedToParse, "$pop expects 1 or -1, found: %s", shellString(arg))
		}
		if !found || len(vals) == 0 {
			return doc, nil
		}
		if asFloat(arg) == 1 {
			vals = vals[:len(vals)-1]
		} else {
			vals = vals[1:]
		}
		return setPath(doc, parts, buildArray(vals))
	case "$pull", "$pullAll":
		drop, err := pullPredicate(op, arg)
		if err != nil {
			return nil, err
		}
		if !found {
			return doc, nil
		}
		keep := vals[:0:0]
		for _, x := range vals {
			d, err := drop(x)
			if err != nil {
				return nil, err
			}
			if !d {
				keep = append(keep, x)
			}
		}
		if len(keep) == len(vals) {
			return doc, nil
		}
		return setPath(doc, parts, buildArray(keep))
	}
	return nil, errorf(codeFailedToParse, "Unknown modifier: %s", op)
}

// pullPredicate returns which array elements $pull or $pullAll removes: a
// condition of query operators, a query on embedded documents, or equal
// values.
func pullPredicate(op string, arg bson.RawValue) (func(bson.RawValue) (bool, *cmdError), *cmdError) {
	if op == "$pullAll" {
		if arg.Type != bson.TypeArray {
			return nil, errorf(codeBadValue, "$pullAll requires an array argument but was given a %s", typeName(arg.Type))
		}
		list := arrayValues(arg)
		return func(x bson.RawValue) (bool, *cmdError) {
			return slices.ContainsFunc(list, func(w bson.RawValue) bool { return compareValues(x, w) == 0 }), nil
		}, nil
	}
	if ops, isOps := isOperatorDoc(arg); isOps {
		return func(x bson.RawValue) (bool, *cmdError) { return matchOps([]bson.RawValue{x}, ops) }, nil
	}
	if cond, isDoc := arg.DocumentOK(); isDoc {
		return func(x bson.RawValue) (bool, *cmdError) {
			xd, ok := x.DocumentOK()
			if !ok {
				return false, nil
			}
			return matches(xd, cond)
		}, nil
	}
	return func(x bson.RawValue) (bool, *cmdError) { return compareValues(x, arg) == 0, nil }, nil
}

// push applies $push with its modifiers $each, $position, $slice and $sort.
func push(doc bson.Raw, parts []string, vals []bson.RawValue, arg bson.RawValue) (bson.Raw, *cmdError) {
	d, ok := arg.DocumentOK()
	if !ok || d.Lookup("$each").Type == 0 {
		return setPath(doc, parts, buildArray(append(vals, arg)))
	}
	each := d.Lookup("$each")
	if each.Type != bson.TypeArray {
		return nil, errorf(codeBadValue, "The argument to $each in $push must be an array but it was of type: %s", typeName(each.Type))
	}
	add := arrayValues(each)
	pos := len(vals)
	slice, hasSlice := 0, false
	var sortSpec bson.RawValue
	for _, f := range fieldsOf(d) {
		switch f.key {
		case "$each":
		case "$position":
			if !isNumber(f.val) {
				return nil, errorf(codeBadValue, "The value for $position must be an integer value, not of type: %s", typeName(f.val.Type))
			}
			p := int(asFloat(f.val))
			if p < 0 {
				p = max(0, len(vals)+p)
			}
			pos = min(p, len(vals))
		case "$slice":
			if !isNumber(f.val) {
				return nil, errorf(codeBadValue, "The value for $slice must be an integer value but was given type: %s", typeName(f.val.Type))
			}
			slice, hasSlice = int(asFloat(f.val)), true
		case "$sort":
			sortSpec = f.val
		default:
			return nil, errorf(codeBadValue, "Unrecognized clause in $push: %s", f.key)
		}
	}
	out := append(append(append([]bson.RawValue(nil), vals[:pos]...), add...), vals[pos:]...)
	switch {
	case sortSpec.Type == 0:
	case sortSpec.Type == bson.TypeEmbeddedDocument:
		spec := sortSpec.Document()
		sortBy(out, func(v bson.RawValue) bson.Raw {
			if d, ok := v.DocumentOK(); ok {
				return d
			}
			return buildDoc(nil)
		}, spec)
	case isNumber(sortSpec):
		dir := 1
		if asFloat(sortSpec) < 0 {
			dir = -1
		}
		slices.SortStableFunc(out, func(x, y bson.RawValue) int { return dir * compareValues(x, y) })
	default:
		return nil, errorf(codeBadValue, "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields")
	}
	if hasSlice {
		switch {
		case slice >= 0 && slice < len(out):
			out = out[:slice]
		case slice < 0 && -slice < len(out):
			out = out[len(out)+slice:]
		}
	}
	return setPath(doc, parts, buildArray(out))
}

// typeName returns mongod's name for a BSON type.
func typeName(t bson.Type) string {
	for name, tt := range typeAliases {
		if tt == t {
			return name
		}
	}
	return t.String()
}
