package mongotest

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// matches reports whether doc satisfies the query filter. It supports
// equality (with MongoDB's array-contains rule and dotted paths through
// arrays of documents), $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists,
// $not, $size, $all, $elemMatch, $type, $regex (with $options), $mod, the
// top-level $and, $or, $nor and $expr, and $comment. Any other operator
// fails with BadValue (2), as mongod fails an unknown one.
func matches(doc, filter bson.Raw) (bool, *cmdError) {
	for _, f := range fieldsOf(filter) {
		var ok bool
		var err *cmdError
		switch f.key {
		case "$and", "$or", "$nor":
			ok, err = matchLogical(doc, f.key, f.val)
		case "$expr":
			var v bson.RawValue
			v, _, err = evalExpr(doc, f.val)
			ok = err == nil && truthy(v)
		case "$comment":
			ok = true
		default:
			if slices.Contains(unsupportedQueryOps, f.key) {
				return false, errorf(codeBadValue, "mongotest does not support the query operator %s", f.key)
			}
			if strings.HasPrefix(f.key, "$") {
				return false, errorf(codeBadValue, "unknown top level operator: %s. If you have a field name that starts with a '$' symbol, consider using $getField or $setField.", f.key)
			}
			ok, err = matchField(doc, f.key, f.val)
		}
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// unsupportedQueryOps are mongod's query operators that mongotest does not
// support: they fail with a message that says so.
var unsupportedQueryOps = []string{"$text", "$where", "$jsonSchema", "$near", "$nearSphere", "$geoWithin",
	"$geoIntersects", "$within", "$bitsAllSet", "$bitsAllClear", "$bitsAnySet", "$bitsAnyClear",
	"$sampleRate"}

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

// pathValues returns the values a dotted path reaches in doc, as mongod
// resolves a query path: through embedded documents, into array elements
// by numeric index, and across the documents of an array.
func pathValues(doc bson.Raw, path string) []bson.RawValue {
	var out []bson.RawValue
	collectPath(docValue(doc), strings.Split(path, "."), &out)
	return out
}

func collectPath(v bson.RawValue, parts []string, out *[]bson.RawValue) {
	if len(parts) == 0 {
		*out = append(*out, v)
		return
	}
	switch v.Type {
	case bson.TypeEmbeddedDocument:
		if sub, err := v.Document().LookupErr(parts[0]); err == nil {
			collectPath(sub, parts[1:], out)
		}
	case bson.TypeArray:
		elems := arrayValues(v)
		if i, err := strconv.Atoi(parts[0]); err == nil && i >= 0 && i < len(elems) {
			collectPath(elems[i], parts[1:], out)
		}
		for _, e := range elems {
			if e.Type == bson.TypeEmbeddedDocument {
				collectPath(e, parts, out)
			}
		}
	}
}

func matchField(doc bson.Raw, path string, cond bson.RawValue) (bool, *cmdError) {
	vals := pathValues(doc, path)
	ops, isOps := isOperatorDoc(cond)
	if !isOps {
		return matchEqAny(vals, cond), nil
	}
	return matchOps(vals, ops)
}

// matchEqAny applies equality to the values a path reached: null matches a
// missing field.
func matchEqAny(vals []bson.RawValue, want bson.RawValue) bool {
	if len(vals) == 0 {
		return matchEq(bson.RawValue{}, false, want)
	}
	return slices.ContainsFunc(vals, func(v bson.RawValue) bool { return matchEq(v, true, want) })
}

// anyValue reports whether f holds for one of vals or, for an array, one of
// its elements.
func anyValue(vals []bson.RawValue, f func(bson.RawValue) bool) bool {
	for _, v := range vals {
		if f(v) {
			return true
		}
		if v.Type == bson.TypeArray && slices.ContainsFunc(arrayValues(v), f) {
			return true
		}
	}
	return false
}

func matchOps(vals []bson.RawValue, ops bson.Raw) (bool, *cmdError) {
	var regexOpts string
	if o, err := ops.LookupErr("$options"); err == nil {
		s, ok := o.StringValueOK()
		if !ok {
			return false, errorf(codeBadValue, "$options has to be a string")
		}
		if _, err := ops.LookupErr("$regex"); err != nil {
			return false, errorf(codeBadValue, "$options needs a $regex")
		}
		regexOpts = s
	}
	for _, op := range fieldsOf(ops) {
		var ok bool
		switch op.key {
		case "$eq":
			ok = matchEqAny(vals, op.val)
		case "$ne":
			ok = !matchEqAny(vals, op.val)
		case "$gt", "$gte", "$lt", "$lte":
			ok = slices.ContainsFunc(vals, func(v bson.RawValue) bool { return matchCompare(v, op.key, op.val) })
		case "$in", "$nin":
			if op.val.Type != bson.TypeArray {
				return false, errorf(codeBadValue, "%s needs an array", op.key)
			}
			in := slices.ContainsFunc(arrayValues(op.val), func(c bson.RawValue) bool { return matchEqAny(vals, c) })
			ok = in == (op.key == "$in")
		case "$exists":
			want := true
			if b, isBool := op.val.BooleanOK(); isBool {
				want = b
			} else if isNumber(op.val) {
				want = asFloat(op.val) != 0
			}
			ok = (len(vals) > 0) == want
		case "$not":
			var m bool
			if sub, isDoc := isOperatorDoc(op.val); isDoc {
				var err *cmdError
				if m, err = matchOps(vals, sub); err != nil {
					return false, err
				}
			} else if op.val.Type == bson.TypeRegex {
				m = matchEqAny(vals, op.val)
			} else {
				return false, errorf(codeBadValue, "$not needs a regex or a document")
			}
			ok = !m
		case "$size":
			if !isNumber(op.val) {
				return false, errorf(codeBadValue, "$size needs a number")
			}
			n := asFloat(op.val)
			ok = slices.ContainsFunc(vals, func(v bson.RawValue) bool {
				return v.Type == bson.TypeArray && float64(len(arrayValues(v))) == n
			})
		case "$all":
			if op.val.Type != bson.TypeArray {
				return false, errorf(codeBadValue, "$all needs an array")
			}
			want := arrayValues(op.val)
			ok = len(want) > 0
			for _, w := range want {
				if em, isEM := w.DocumentOK(); isEM && em.Lookup("$elemMatch").Type != 0 {
					m, err := matchOps(vals, em)
					if err != nil {
						return false, err
					}
					ok = ok && m
					continue
				}
				ok = ok && matchEqAny(vals, w)
			}
		case "$elemMatch":
			cond, isDoc := op.val.DocumentOK()
			if !isDoc {
				return false, errorf(codeBadValue, "$elemMatch needs an Object")
			}
			_, opsOnly := isOperatorDoc(op.val)
			if fs := fieldsOf(cond); opsOnly && len(fs) > 0 && (fs[0].key == "$and" || fs[0].key == "$or" || fs[0].key == "$nor" || fs[0].key == "$expr") {
				opsOnly = false
			}
			for _, v := range vals {
				if v.Type != bson.TypeArray {
					continue
				}
				for _, e := range arrayValues(v) {
					var m bool
					var err *cmdError
					if opsOnly {
						m, err = matchOps([]bson.RawValue{e}, cond)
					} else if ed, isDoc := e.DocumentOK(); isDoc {
						m, err = matches(ed, cond)
					}
					if err != nil {
						return false, err
					}
					if m {
						ok = true
					}
				}
			}
		case "$type":
			types, err := typeSet(op.val)
			if err != nil {
				return false, err
			}
			ok = anyValue(vals, func(v bson.RawValue) bool { return types(v.Type) })
			if !ok && types(bson.TypeArray) {
				ok = slices.ContainsFunc(vals, func(v bson.RawValue) bool { return v.Type == bson.TypeArray })
			}
		case "$regex":
			re, err := compileRegex(op.val, regexOpts)
			if err != nil {
				return false, err
			}
			ok = anyValue(vals, func(v bson.RawValue) bool {
				s, isStr := v.StringValueOK()
				return isStr && re.MatchString(s)
			})
		case "$options":
			ok = true
		case "$mod":
			args := arrayValues(op.val)
			if op.val.Type != bson.TypeArray || len(args) != 2 || !isNumber(args[0]) || !isNumber(args[1]) {
				return false, errorf(codeBadValue, "malformed mod, needs to be an array of two numbers")
			}
			div, rem := int64(asFloat(args[0])), int64(asFloat(args[1]))
			if div == 0 {
				return false, errorf(codeBadValue, "divisor cannot be 0")
			}
			ok = anyValue(vals, func(v bson.RawValue) bool { return isNumber(v) && int64(asFloat(v))%div == rem })
		case "$comment":
			ok = true
		default:
			if slices.Contains(unsupportedQueryOps, op.key) {
				return false, errorf(codeBadValue, "mongotest does not support the query operator %s", op.key)
			}
			return false, errorf(codeBadValue, "unknown operator: %s", op.key)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// compileRegex compiles a $regex argument (a string or a BSON regular
// expression) with options (i, m, s, x as in PCRE; x is accepted and
// ignored only when the pattern has no white space).
func compileRegex(v bson.RawValue, opts string) (*regexp.Regexp, *cmdError) {
	var pattern string
	switch v.Type {
	case bson.TypeString:
		pattern = v.StringValue()
	case bson.TypeRegex:
		p, o := v.Regex()
		pattern = p
		if opts == "" {
			opts = o
		}
	default:
		return nil, errorf(codeBadValue, "$regex has to be a string")
	}
	flags := ""
	for _, c := range opts {
		switch c {
		case 'i', 'm', 's':
			flags += string(c)
		case 'x':
			if strings.ContainsAny(pattern, " \t\n#") {
				return nil, errorf(codeBadValue, "mongotest does not support the regular expression option x with white space or comments in the pattern")
			}
		case 'u':
		default:
			return nil, errorf(codeBadValue, "invalid flag in regex options: %c", c)
		}
	}
	if flags != "" {
		pattern = "(?" + flags + ")" + pattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, errorf(codeBadValue, "Regular expression is invalid (mongotest uses Go's RE2 syntax): %v", err)
	}
	return re, nil
}

// typeSet returns a predicate for a $type argument: a type number, an
// alias, "number", or an array of them.
func typeSet(v bson.RawValue) (func(bson.Type) bool, *cmdError) {
	var list []bson.RawValue
	if v.Type == bson.TypeArray {
		list = arrayValues(v)
	} else {
		list = []bson.RawValue{v}
	}
	var types []bson.Type
	number := false
	for _, x := range list {
		if isNumber(x) {
			types = append(types, bson.Type(int(asFloat(x))))
			continue
		}
		s, ok := x.StringValueOK()
		if !ok {
			return nil, errorf(codeBadValue, "type must be represented as a number or a string")
		}
		if s == "number" {
			number = true
			continue
		}
		t, known := typeAliases[s]
		if !known {
			return nil, errorf(codeBadValue, "Unknown type name alias: %s", s)
		}
		types = append(types, t)
	}
	return func(t bson.Type) bool {
		return number && typeOrder(t) == 3 || slices.Contains(types, t)
	}, nil
}

var typeAliases = map[string]bson.Type{
	"double": bson.TypeDouble, "string": bson.TypeString, "object": bson.TypeEmbeddedDocument,
	"array": bson.TypeArray, "binData": bson.TypeBinary, "undefined": bson.TypeUndefined,
	"objectId": bson.TypeObjectID, "bool": bson.TypeBoolean, "date": bson.TypeDateTime,
	"null": bson.TypeNull, "regex": bson.TypeRegex, "dbPointer": bson.TypeDBPointer,
	"javascript": bson.TypeJavaScript, "symbol": bson.TypeSymbol, "int": bson.TypeInt32,
	"timestamp": bson.TypeTimestamp, "long": bson.TypeInt64, "decimal": bson.TypeDecimal128,
	"minKey": bson.TypeMinKey, "maxKey": bson.TypeMaxKey,
}

// matchEq applies MongoDB equality: null matches a missing field, a scalar
// matches an array that contains it, and a regular expression matches a
// string.
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
	if want.Type == bson.TypeRegex {
		re, err := compileRegex(want, "")
		if err == nil {
			if s, ok := val.StringValueOK(); ok && re.MatchString(s) {
				return true
			}
		}
	}
	if val.Type == bson.TypeArray {
		for _, e := range arrayValues(val) {
			if compareValues(e, want) == 0 {
				return true
			}
			if want.Type == bson.TypeNull && e.Type == bson.TypeNull {
				return true
			}
			if want.Type == bson.TypeRegex && e.Type == bson.TypeString && matchEq(e, true, want) {
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

// equalityFields returns the equality conditions of filter (plain values
// and $eq, top level and inside a top-level $and), used to seed the
// document an upsert inserts. Dotted paths are returned as they are.
func equalityFields(filter bson.Raw) []field {
	var out []field
	for _, f := range fieldsOf(filter) {
		if f.key == "$and" {
			for _, sub := range arrayValues(f.val) {
				if sd, ok := sub.DocumentOK(); ok {
					out = append(out, equalityFields(sd)...)
				}
			}
			continue
		}
		if strings.HasPrefix(f.key, "$") {
			continue
		}
		if ops, isOps := isOperatorDoc(f.val); isOps {
			if eq, err := ops.LookupErr("$eq"); err == nil {
				out = append(out, field{key: f.key, val: eq})
			}
			continue
		}
		if f.val.Type == bson.TypeRegex {
			continue
		}
		out = append(out, field{key: f.key, val: f.val})
	}
	return out
}
