package mongotest

import (
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// matches reports whether doc satisfies the query filter. It supports
// equality (with MongoDB's array-contains rule), $eq, $ne, $gt, $gte, $lt,
// $lte, $in, $nin, $exists, $not, and the top-level $and, $or and $nor.
func matches(doc, filter bson.Raw) (bool, *cmdError) {
	for _, f := range fieldsOf(filter) {
		var ok bool
		var err *cmdError
		switch f.key {
		case "$and", "$or", "$nor":
			ok, err = matchLogical(doc, f.key, f.val)
		default:
			if strings.HasPrefix(f.key, "$") {
				return false, errorf(codeBadValue, "unknown top level operator: %s", f.key)
			}
			ok, err = matchField(doc, f.key, f.val)
		}
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func matchLogical(doc bson.Raw, op string, v bson.RawValue) (bool, *cmdError) {
	subs := arrayValues(v)
	if v.Type != bson.TypeArray || len(subs) == 0 {
		return false, errorf(codeBadValue, "%s must be a nonempty array", op)
	}
	for _, s := range subs {
		sd, ok := s.DocumentOK()
		if !ok {
			return false, errorf(codeBadValue, "%s argument's entries must be objects", op)
		}
		m, err := matches(doc, sd)
		if err != nil {
			return false, err
		}
		switch {
		case op == "$and" && !m:
			return false, nil
		case op == "$or" && m:
			return true, nil
		case op == "$nor" && m:
			return false, nil
		}
	}
	return op != "$or", nil
}

// isOperatorDoc reports whether v is a document whose first key is a $
// operator.
func isOperatorDoc(v bson.RawValue) (bson.Raw, bool) {
	d, ok := v.DocumentOK()
	if !ok {
		return nil, false
	}
	fs := fieldsOf(d)
	if len(fs) == 0 || !strings.HasPrefix(fs[0].key, "$") {
		return nil, false
	}
	return d, true
}

func matchField(doc bson.Raw, path string, cond bson.RawValue) (bool, *cmdError) {
	val, found := lookupPath(doc, path)
	ops, isOps := isOperatorDoc(cond)
	if !isOps {
		return matchEq(val, found, cond), nil
	}
	return matchOps(val, found, ops)
}

func matchOps(val bson.RawValue, found bool, ops bson.Raw) (bool, *cmdError) {
	for _, op := range fieldsOf(ops) {
		var ok bool
		switch op.key {
		case "$eq":
			ok = matchEq(val, found, op.val)
		case "$ne":
			ok = !matchEq(val, found, op.val)
		case "$gt", "$gte", "$lt", "$lte":
			ok = found && matchCompare(val, op.key, op.val)
		case "$in", "$nin":
			if op.val.Type != bson.TypeArray {
				return false, errorf(codeBadValue, "%s needs an array", op.key)
			}
			in := false
			for _, c := range arrayValues(op.val) {
				if matchEq(val, found, c) {
					in = true
					break
				}
			}
			ok = in == (op.key == "$in")
		case "$exists":
			want := true
			if b, isBool := op.val.BooleanOK(); isBool {
				want = b
			} else if isNumber(op.val) {
				want = asFloat(op.val) != 0
			}
			ok = found == want
		case "$not":
			sub, isDoc := isOperatorDoc(op.val)
			if !isDoc {
				return false, errorf(codeBadValue, "$not needs a document of operators")
			}
			m, err := matchOps(val, found, sub)
			if err != nil {
				return false, err
			}
			ok = !m
		default:
			return false, errorf(codeBadValue, "unknown operator: %s", op.key)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// matchEq applies MongoDB equality: null matches a missing field, and a
// scalar matches an array that contains it.
func matchEq(val bson.RawValue, found bool, want bson.RawValue) bool {
	if want.Type == bson.TypeNull && (!found || val.Type == bson.TypeNull || val.Type == bson.TypeUndefined) {
		return true
	}
	if !found {
		return false
	}
	if compareValues(val, want) == 0 {
		return true
	}
	if val.Type == bson.TypeArray {
		for _, e := range arrayValues(val) {
			if compareValues(e, want) == 0 {
				return true
			}
		}
	}
	return false
}

// matchCompare applies a range operator within one type class, element-wise
// for arrays.
func matchCompare(val bson.RawValue, op string, want bson.RawValue) bool {
	check := func(v bson.RawValue) bool {
		if typeOrder(v.Type) != typeOrder(want.Type) {
			return false
		}
		c := compareValues(v, want)
		switch op {
		case "$gt":
			return c > 0
		case "$gte":
			return c >= 0
		case "$lt":
			return c < 0
		default:
			return c <= 0
		}
	}
	if check(val) {
		return true
	}
	if val.Type == bson.TypeArray && want.Type != bson.TypeArray {
		return slices.ContainsFunc(arrayValues(val), check)
	}
	return false
}

// equalityFields returns the top-level equality conditions of filter (plain
// values and $eq), used to seed the document an upsert inserts.
func equalityFields(filter bson.Raw) []field {
	var out []field
	for _, f := range fieldsOf(filter) {
		if strings.HasPrefix(f.key, "$") || strings.Contains(f.key, ".") {
			continue
		}
		if ops, isOps := isOperatorDoc(f.val); isOps {
			if eq, err := ops.LookupErr("$eq"); err == nil {
				out = append(out, field{key: f.key, val: eq})
			}
			continue
		}
		out = append(out, f)
	}
	return out
}
