package mongotest

import (
	"slices"
	"strings"
	"time"

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

// isReplacement reports whether an update document replaces the whole
// document rather than applying $ operators.
func isReplacement(upd bson.Raw) bool {
	fs := fieldsOf(upd)
	return len(fs) == 0 || !strings.HasPrefix(fs[0].key, "$")
}

// applyUpdate returns the document that results from applying the update
// document upd to old. insert is true when the update builds an upserted
// document, which enables $setOnInsert.
func applyUpdate(old bson.Raw, upd bson.RawValue, insert bool, now time.Time) (bson.Raw, *cmdError) {
	if upd.Type == bson.TypeArray {
		return nil, errorf(codeFailedToParse, "mongotest does not support pipeline updates")
	}
	u, ok := upd.DocumentOK()
	if !ok {
		return nil, errorf(codeFailedToParse, "update must be a document")
	}
	oldID, hadID := old.Lookup("_id"), old.Lookup("_id").Type != 0
	var out bson.Raw
	if isReplacement(u) {
		for _, f := range fieldsOf(u) {
			if strings.HasPrefix(f.key, "$") {
				return nil, errorf(codeBadValue, "replacement document must not contain $ operators: %s", f.key)
			}
		}
		out = u
		if hadID {
			if newID, err := u.LookupErr("_id"); err == nil && compareValues(newID, oldID) != 0 {
				return nil, errorf(codeImmutableField, "After applying the update, the (immutable) field '_id' was found to have been altered")
			}
			out = withID(u, oldID)
		}
		return out, nil
	}
	out = old
	for _, opf := range fieldsOf(u) {
		args, ok := opf.val.DocumentOK()
		if !ok {
			return nil, errorf(codeFailedToParse, "Modifiers operate on fields but we found type %s instead", opf.val.Type)
		}
		for _, a := range fieldsOf(args) {
			var err *cmdError
			out, err = applyOperator(out, opf.key, a.key, a.val, insert, now)
			if err != nil {
				return nil, err
			}
		}
	}
	if hadID {
		if newID, err := out.LookupErr("_id"); err != nil || compareValues(newID, oldID) != 0 {
			return nil, errorf(codeImmutableField, "Performing an update on the path '_id' would modify the immutable field '_id'")
		}
	}
	return out, nil
}

func applyOperator(doc bson.Raw, op, path string, arg bson.RawValue, insert bool, now time.Time) (bson.Raw, *cmdError) {
	parts := strings.Split(path, ".")
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
			return nil, errorf(codeTypeMismatch, "Cannot %s with non-numeric argument: {%s: %s}", op[1:], path, arg)
		}
		if found && !isNumber(cur) {
			return nil, errorf(codeTypeMismatch, "Cannot apply %s to a value of non-numeric type. {_id: %s} has the field '%s' of non-numeric type %s", op, doc.Lookup("_id"), path, cur.Type)
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
		return setPath(doc, parts, mustValue(bson.NewDateTimeFromTime(now)))
	case "$push":
		if found && cur.Type != bson.TypeArray {
			return nil, errorf(codeBadValue, "The field '%s' must be an array but is of type %s", path, cur.Type)
		}
		vals := arrayValues(cur)
		if d, ok := arg.DocumentOK(); ok {
			if each, err := d.LookupErr("$each"); err == nil {
				return setPath(doc, parts, buildArray(append(vals, arrayValues(each)...)))
			}
		}
		return setPath(doc, parts, buildArray(append(vals, arg)))
	}
	return nil, errorf(codeFailedToParse, "Unknown modifier: %s", op)
}

// arith applies $inc or $mul to two numbers with MongoDB's type promotion:
// double wins, then int64, and int32 overflow widens to int64.
func arith(op string, a, b bson.RawValue) bson.RawValue {
	if a.Type == bson.TypeDouble || b.Type == bson.TypeDouble || a.Type == bson.TypeDecimal128 || b.Type == bson.TypeDecimal128 {
		x, y := asFloat(a), asFloat(b)
		if op == "$mul" {
			return mustValue(x * y)
		}
		return mustValue(x + y)
	}
	x, y := a.AsInt64(), b.AsInt64()
	var r int64
	if op == "$mul" {
		r = x * y
	} else {
		r = x + y
	}
	if a.Type == bson.TypeInt32 && b.Type == bson.TypeInt32 && r >= -1<<31 && r < 1<<31 {
		return mustValue(int32(r))
	}
	return int64Value(r)
}

// setPath returns doc with the value at the dotted path parts set to v,
// creating intermediate documents.
func setPath(doc bson.Raw, parts []string, v bson.RawValue) (bson.Raw, *cmdError) {
	fs := fieldsOf(doc)
	for i, f := range fs {
		if f.key != parts[0] {
			continue
		}
		if len(parts) == 1 {
			fs[i].val = v
			return buildDoc(fs), nil
		}
		switch f.val.Type {
		case bson.TypeEmbeddedDocument:
			sub, err := setPath(f.val.Document(), parts[1:], v)
			if err != nil {
				return nil, err
			}
			fs[i].val = docValue(sub)
		case bson.TypeArray:
			sub, err := setPath(bson.Raw(f.val.Array()), parts[1:], v)
			if err != nil {
				return nil, err
			}
			fs[i].val = bson.RawValue{Type: bson.TypeArray, Value: sub}
		default:
			return nil, errorf(codePathNotViable, "Cannot create field '%s' in element {%s: %s}", parts[1], f.key, f.val)
		}
		return buildDoc(fs), nil
	}
	if len(parts) == 1 {
		return buildDoc(append(fs, field{key: parts[0], val: v})), nil
	}
	sub, err := setPath(buildDoc(nil), parts[1:], v)
	if err != nil {
		return nil, err
	}
	return buildDoc(append(fs, field{key: parts[0], val: docValue(sub)})), nil
}

// unsetPath returns doc without the value at the dotted path parts.
func unsetPath(doc bson.Raw, parts []string) bson.Raw {
	fs := fieldsOf(doc)
	for i, f := range fs {
		if f.key != parts[0] {
			continue
		}
		if len(parts) == 1 {
			return buildDoc(append(fs[:i], fs[i+1:]...))
		}
		if sub, ok := f.val.DocumentOK(); ok {
			fs[i].val = docValue(unsetPath(sub, parts[1:]))
			return buildDoc(fs)
		}
		return doc
	}
	return doc
}

// withID returns doc with _id set to id as its first field.
func withID(doc bson.Raw, id bson.RawValue) bson.Raw {
	fs := []field{{key: "_id", val: id}}
	for _, f := range fieldsOf(doc) {
		if f.key != "_id" {
			fs = append(fs, f)
		}
	}
	return buildDoc(fs)
}

// ensureID returns doc with an _id as its first field, generating an
// ObjectID when doc has none.
func ensureID(doc bson.Raw) bson.Raw {
	id, err := doc.LookupErr("_id")
	if err != nil {
		return withID(doc, mustValue(bson.NewObjectID()))
	}
	if fs := fieldsOf(doc); len(fs) > 0 && fs[0].key == "_id" {
		return doc
	}
	return withID(doc, id)
}

// project applies an inclusion or exclusion projection on top-level fields.
func project(doc, proj bson.Raw) bson.Raw {
	pf := fieldsOf(proj)
	if len(pf) == 0 {
		return doc
	}
	include := map[string]bool{}
	inclusion := false
	idShown := true
	for _, p := range pf {
		on := p.val.Type == bson.TypeBoolean && p.val.Boolean() || isNumber(p.val) && asFloat(p.val) != 0
		if p.key == "_id" {
			idShown = on
			continue
		}
		include[p.key] = on
		if on {
			inclusion = true
		}
	}
	var out []field
	for _, f := range fieldsOf(doc) {
		if f.key == "_id" {
			if idShown {
				out = append(out, f)
			}
			continue
		}
		on, listed := include[f.key]
		if inclusion && listed && on || !inclusion && !listed {
			out = append(out, f)
		}
	}
	return buildDoc(out)
}

// sortDocs orders docs by the sort specification spec, stably.
func sortDocs(docs []bson.Raw, spec bson.Raw) {
	sortBy(docs, func(d bson.Raw) bson.Raw { return d }, spec)
}

// sortBy orders xs by the documents doc returns for them, following the
// sort specification spec, stably.
func sortBy[T any](xs []T, doc func(T) bson.Raw, spec bson.Raw) {
	keys := fieldsOf(spec)
	if len(keys) == 0 {
		return
	}
	slices.SortStableFunc(xs, func(x, y T) int {
		a, b := doc(x), doc(y)
		for _, k := range keys {
			dir := 1
			if isNumber(k.val) && asFloat(k.val) < 0 {
				dir = -1
			}
			va, fa := lookupPath(a, k.key)
			vb, fb := lookupPath(b, k.key)
			if !fa {
				va = bson.RawValue{Type: bson.TypeNull}
			}
			if !fb {
				vb = bson.RawValue{Type: bson.TypeNull}
			}
			if c := compareValues(va, vb); c != 0 {
				return c * dir
			}
		}
		return 0
	})
}
