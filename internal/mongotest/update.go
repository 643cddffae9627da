package mongotest

import (
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

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
	return applyUpdateQ(old, upd, nil, insert, now)
}

// applyUpdateQ is applyUpdate for a document that the query q selected,
// which the positional operator $ refers to.
func applyUpdateQ(old bson.Raw, upd bson.RawValue, q bson.Raw, insert bool, now time.Time) (bson.Raw, *cmdError) {
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
	ops, err := parseUpdateOps(u)
	if err != nil {
		return nil, err
	}
	if ops, err = expandPositional(ops, old, q); err != nil {
		return nil, err
	}
	out = old
	for _, o := range ops {
		var err *cmdError
		out, err = applyOperator(out, o, insert, now)
		if err != nil {
			return nil, err
		}
	}
	if hadID {
		if newID, err := out.LookupErr("_id"); err != nil || compareValues(newID, oldID) != 0 {
			return nil, errorf(codeImmutableField, "Performing an update on the path '_id' would modify the immutable field '_id'")
		}
	}
	return out, nil
}

// arith applies $inc or $mul to two numbers with MongoDB's type promotion:
// double wins, then int64, and int32 overflow widens to int64.
func arith(op string, a, b bson.RawValue) bson.RawValue {
	if a.Type == bson.TypeDecimal128 || b.Type == bson.TypeDecimal128 {
		if r, ok := decimalArith(op, a, b); ok {
			return r
		}
	}
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
			sub, err := setArrayPath(f.val, parts[1:], v)
			if err != nil {
				return nil, err
			}
			fs[i].val = sub
		default:
			return nil, errorf(codePathNotViable, "Cannot create field '%s' in element {%s: %s}", parts[1], f.key, shellString(f.val))
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

// setArrayPath sets the element of arr that parts[0], a numeric index,
// names, padding the array with nulls up to it as mongod does.
func setArrayPath(arr bson.RawValue, parts []string, v bson.RawValue) (bson.RawValue, *cmdError) {
	idx, err := strconv.Atoi(parts[0])
	if err != nil || idx < 0 {
		return bson.RawValue{}, errorf(codePathNotViable, "Cannot create field '%s' in element {%s}", parts[0], shellString(arr))
	}
	elems := arrayValues(arr)
	for len(elems) <= idx {
		elems = append(elems, nullValue)
	}
	if len(parts) == 1 {
		elems[idx] = v
		return buildArray(elems), nil
	}
	switch e := elems[idx]; e.Type {
	case bson.TypeEmbeddedDocument:
		sub, err := setPath(e.Document(), parts[1:], v)
		if err != nil {
			return bson.RawValue{}, err
		}
		elems[idx] = docValue(sub)
	case bson.TypeArray:
		sub, err := setArrayPath(e, parts[1:], v)
		if err != nil {
			return bson.RawValue{}, err
		}
		elems[idx] = sub
	case bson.TypeNull:
		sub, err := setPath(buildDoc(nil), parts[1:], v)
		if err != nil {
			return bson.RawValue{}, err
		}
		elems[idx] = docValue(sub)
	default:
		return bson.RawValue{}, errorf(codePathNotViable, "Cannot create field '%s' in element {%s: %s}", parts[1], parts[0], shellString(e))
	}
	return buildArray(elems), nil
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
		if f.val.Type == bson.TypeArray {
			fs[i].val = unsetArrayPath(f.val, parts[1:])
			return buildDoc(fs)
		}
		return doc
	}
	return doc
}

// unsetArrayPath unsets the element parts[0] of arr: mongod sets an
// unset array element to null rather than shifting the others.
func unsetArrayPath(arr bson.RawValue, parts []string) bson.RawValue {
	idx, err := strconv.Atoi(parts[0])
	elems := arrayValues(arr)
	if err != nil || idx < 0 || idx >= len(elems) {
		return arr
	}
	if len(parts) == 1 {
		elems[idx] = nullValue
		return buildArray(elems)
	}
	switch e := elems[idx]; e.Type {
	case bson.TypeEmbeddedDocument:
		elems[idx] = docValue(unsetPath(e.Document(), parts[1:]))
	case bson.TypeArray:
		elems[idx] = unsetArrayPath(e, parts[1:])
	}
	return buildArray(elems)
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
