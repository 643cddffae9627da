package mongotest

import (
	"math"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Aggregation expressions. evalExpr supports field paths ("$a.b"), the
// variables $$ROOT, $$CURRENT and $$REMOVE, literals, documents and arrays
// of expressions, and the operators listed in exprOps. Any other operator
// fails with InvalidPipelineOperator (168), as mongod fails an unknown
// one, never silently.

const codeInvalidPipelineOperator = 168

// exprOps are the expression operators evalExpr supports.
var exprOps = []string{"$literal", "$add", "$subtract", "$multiply", "$divide", "$mod",
	"$concat", "$toLower", "$toUpper", "$ifNull", "$cond", "$eq", "$ne", "$gt", "$gte", "$lt",
	"$lte", "$cmp", "$and", "$or", "$not", "$size", "$sum", "$avg", "$min", "$max", "$in",
	"$arrayElemAt", "$abs"}

// missing is the value of an expression that names a field a document
// lacks.
var missing = bson.RawValue{}

// evalExpr evaluates the expression e against doc. found is false when the
// result is missing (a field path to an absent field, $$REMOVE).
func evalExpr(doc bson.Raw, e bson.RawValue) (v bson.RawValue, found bool, err *cmdError) {
	switch e.Type {
	case bson.TypeString:
		s := e.StringValue()
		switch {
		case strings.HasPrefix(s, "$$"):
			name, rest, _ := strings.Cut(s[2:], ".")
			var base bson.RawValue
			switch name {
			case "ROOT", "CURRENT":
				base = docValue(doc)
			case "REMOVE":
				return missing, false, nil
			default:
				return missing, false, errorf(17276, "Use of undefined variable: %s", name)
			}
			if rest == "" {
				return base, true, nil
			}
			return fieldPath(base.Document(), rest)
		case strings.HasPrefix(s, "$"):
			if len(s) == 1 {
				return missing, false, errorf(16872, "'$' by itself is not a valid FieldPath")
			}
			return fieldPath(doc, s[1:])
		}
		return e, true, nil
	case bson.TypeEmbeddedDocument:
		fs := fieldsOf(e.Document())
		if len(fs) > 0 && strings.HasPrefix(fs[0].key, "$") {
			if len(fs) != 1 {
				return missing, false, errorf(15983, "An object representing an expression must have exactly one field: %s", shellString(e))
			}
			return evalOp(doc, fs[0].key, fs[0].val)
		}
		out := make([]field, 0, len(fs))
		for _, f := range fs {
			v, found, err := evalExpr(doc, f.val)
			if err != nil {
				return missing, false, err
			}
			if found {
				out = append(out, field{key: f.key, val: v})
			}
		}
		return docValue(buildDoc(out)), true, nil
	case bson.TypeArray:
		vals := arrayValues(e)
		out := make([]bson.RawValue, len(vals))
		for i, x := range vals {
			v, found, err := evalExpr(doc, x)
			if err != nil {
				return missing, false, err
			}
			if !found {
				v = nullValue
			}
			out[i] = v
		}
		return buildArray(out), true, nil
	}
	return e, true, nil
}

var nullValue = bson.RawValue{Type: bson.TypeNull}

// fieldPath resolves an expression field path: through documents, and
// across arrays, whose elements give an array of the values found.
func fieldPath(doc bson.Raw, path string) (bson.RawValue, bool, *cmdError) {
	v, found := resolvePath(docValue(doc), strings.Split(path, "."))
	return v, found, nil
}

func resolvePath(v bson.RawValue, parts []string) (bson.RawValue, bool) {
	if len(parts) == 0 {
		return v, true
	}
	switch v.Type {
	case bson.TypeEmbeddedDocument:
		sub, err := v.Document().LookupErr(parts[0])
		if err != nil {
			return missing, false
		}
		return resolvePath(sub, parts[1:])
	case bson.TypeArray:
		var out []bson.RawValue
		for _, e := range arrayValues(v) {
			if e.Type == bson.TypeArray {
				continue // nested arrays are not traversed
			}
			if x, ok := resolvePath(e, parts); ok {
				out = append(out, x)
			}
		}
		return buildArray(out), true
	}
	return missing, false
}

// truthy is the boolean value of an expression result.
func truthy(v bson.RawValue) bool {
	switch v.Type {
	case 0, bson.TypeNull, bson.TypeUndefined:
		return false
	case bson.TypeBoolean:
		return v.Boolean()
	}
	if isNumber(v) {
		return asFloat(v) != 0
	}
	return true
}

// evalArgs evaluates the arguments of an operator: an array of
// expressions, or a single expression.
func evalArgs(doc bson.Raw, arg bson.RawValue) ([]bson.RawValue, []bool, *cmdError) {
	var exprs []bson.RawValue
	if arg.Type == bson.TypeArray {
		exprs = arrayValues(arg)
	} else {
		exprs = []bson.RawValue{arg}
	}
	vals := make([]bson.RawValue, len(exprs))
	found := make([]bool, len(exprs))
	for i, x := range exprs {
		v, f, err := evalExpr(doc, x)
		if err != nil {
			return nil, nil, err
		}
		vals[i], found[i] = v, f
	}
	return vals, found, nil
}

func isNullish(v bson.RawValue) bool {
	return v.Type == 0 || v.Type == bson.TypeNull || v.Type == bson.TypeUndefined
}

func evalOp(doc bson.Raw, op string, arg bson.RawValue) (bson.RawValue, bool, *cmdError) {
	if !slices.Contains(exprOps, op) {
		return missing, false, errorf(codeInvalidPipelineOperator, "Unrecognized expression '%s' (mongotest supports %s)", op, strings.Join(exprOps, ", "))
	}
	if op == "$literal" {
		return arg, true, nil
	}
	vals, found, err := evalArgs(doc, arg)
	if err != nil {
		return missing, false, err
	}
	nargs := func(n int) *cmdError {
		if len(vals) != n {
			return errorf(16020, "Expression %s takes exactly %d arguments. %d were passed in.", op, n, len(vals))
		}
		return nil
	}
	switch op {
	case "$add", "$multiply":
		acc := mustValue(int32(0))
		if op == "$multiply" {
			acc = mustValue(int32(1))
		}
		var date *bson.RawValue
		for _, v := range vals {
			switch {
			case isNullish(v):
				return nullValue, true, nil
			case v.Type == bson.TypeDateTime && op == "$add" && date == nil:
				d := v
				date = &d
			case isNumber(v):
				if op == "$add" {
					acc = arith("$inc", acc, v)
				} else {
					acc = arith("$mul", acc, v)
				}
			default:
				return missing, false, errorf(16554, "%s only supports numeric or date types, not %s", op, typeName(v.Type))
			}
		}
		if date != nil {
			return mustValue(bson.DateTime(date.DateTime() + int64(asFloat(acc)))), true, nil
		}
		return acc, true, nil
	case "$subtract", "$divide", "$mod":
		if err := nargs(2); err != nil {
			return missing, false, err
		}
		a, b := vals[0], vals[1]
		if isNullish(a) || isNullish(b) {
			return nullValue, true, nil
		}
		if op == "$subtract" && a.Type == bson.TypeDateTime {
			if b.Type == bson.TypeDateTime {
				return int64Value(a.DateTime() - b.DateTime()), true, nil
			}
			if isNumber(b) {
				return mustValue(bson.DateTime(a.DateTime() - int64(asFloat(b)))), true, nil
			}
		}
		if !isNumber(a) || !isNumber(b) {
			return missing, false, errorf(16556, "cant %s a %s from a %s", op[1:], typeName(b.Type), typeName(a.Type))
		}
		switch op {
		case "$subtract":
			return arith("$inc", a, arith("$mul", b, mustValue(int32(-1)))), true, nil
		case "$divide":
			if asFloat(b) == 0 {
				return missing, false, errorf(2, "can't $divide by zero")
			}
			if a.Type == bson.TypeDecimal128 || b.Type == bson.TypeDecimal128 {
				if q, ok := decimalDiv(a, b); ok {
					return q, true, nil
				}
			}
			return mustValue(asFloat(a) / asFloat(b)), true, nil
		}
		if asFloat(b) == 0 {
			return missing, false, errorf(16610, "can't $mod by zero")
		}
		if a.Type == bson.TypeDouble || b.Type == bson.TypeDouble {
			return mustValue(math.Mod(asFloat(a), asFloat(b))), true, nil
		}
		r := a.AsInt64() % b.AsInt64()
		if a.Type == bson.TypeInt32 && b.Type == bson.TypeInt32 {
			return mustValue(int32(r)), true, nil
		}
		return int64Value(r), true, nil
	case "$concat":
		var sb strings.Builder
		for _, v := range vals {
			if isNullish(v) {
				return nullValue, true, nil
			}
			s, ok := v.StringValueOK()
			if !ok {
				return missing, false, errorf(16702, "$concat only supports strings, not %s", typeName(v.Type))
			}
			sb.WriteString(s)
		}
		return mustValue(sb.String()), true, nil
	case "$toLower", "$toUpper":
		if err := nargs(1); err != nil {
			return missing, false, err
		}
		s, _ := vals[0].StringValueOK()
		if op == "$toLower" {
			return mustValue(strings.ToLower(s)), true, nil
		}
		return mustValue(strings.ToUpper(s)), true, nil
	case "$ifNull":
		for _, v := range vals {
			if !isNullish(v) {
				return v, true, nil
			}
		}
		if len(vals) > 0 {
			return vals[len(vals)-1], found[len(vals)-1], nil
		}
		return nullValue, true, nil
	case "$cond":
		if d, ok := arg.DocumentOK(); ok {
			c, _, err := evalExpr(doc, d.Lookup("if"))
			if err != nil {
				return missing, false, err
			}
			if truthy(c) {
				return evalExpr(doc, d.Lookup("then"))
			}
			return evalExpr(doc, d.Lookup("else"))
		}
		if err := nargs(3); err != nil {
			return missing, false, err
		}
		if truthy(vals[0]) {
			return vals[1], found[1], nil
		}
		return vals[2], found[2], nil
	case "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$cmp":
		if err := nargs(2); err != nil {
			return missing, false, err
		}
		a, b := vals[0], vals[1]
		if !found[0] {
			a = bson.RawValue{Type: bson.TypeUndefined}
		}
		if !found[1] {
			b = bson.RawValue{Type: bson.TypeUndefined}
		}
		c := compareValues(a, b)
		if !found[0] && found[1] && b.Type == bson.TypeNull {
			c = -1
		}
		var r bool
		switch op {
		case "$cmp":
			return mustValue(int32(c)), true, nil
		case "$eq":
			r = c == 0
		case "$ne":
			r = c != 0
		case "$gt":
			r = c > 0
		case "$gte":
			r = c >= 0
		case "$lt":
			r = c < 0
		case "$lte":
			r = c <= 0
		}
		return mustValue(r), true, nil
	case "$and":
		for _, v := range vals {
			if !truthy(v) {
				return mustValue(false), true, nil
			}
		}
		return mustValue(true), true, nil
	case "$or":
		for _, v := range vals {
			if truthy(v) {
				return mustValue(true), true, nil
			}
		}
		return mustValue(false), true, nil
	case "$not":
		if err := nargs(1); err != nil {
			return missing, false, err
		}
		return mustValue(!truthy(vals[0])), true, nil
	case "$size":
		if err := nargs(1); err != nil {
			return missing, false, err
		}
		if vals[0].Type != bson.TypeArray {
			return missing, false, errorf(17124, "The argument to $size must be an array. Type of argument: %s", typeName(vals[0].Type))
		}
		return mustValue(int32(len(arrayValues(vals[0])))), true, nil
	case "$in":
		if err := nargs(2); err != nil {
			return missing, false, err
		}
		if vals[1].Type != bson.TypeArray {
			return missing, false, errorf(40081, "$in requires an array as a second argument, found: %s", typeName(vals[1].Type))
		}
		in := slices.ContainsFunc(arrayValues(vals[1]), func(x bson.RawValue) bool { return compareValues(x, vals[0]) == 0 })
		return mustValue(in), true, nil
	case "$arrayElemAt":
		if err := nargs(2); err != nil {
			return missing, false, err
		}
		if isNullish(vals[0]) || isNullish(vals[1]) {
			return nullValue, true, nil
		}
		arr := arrayValues(vals[0])
		if vals[0].Type != bson.TypeArray || !isNumber(vals[1]) {
			return missing, false, errorf(28689, "$arrayElemAt's first argument must be an array and its second a number")
		}
		i := int(asFloat(vals[1]))
		if i < 0 {
			i += len(arr)
		}
		if i < 0 || i >= len(arr) {
			return missing, false, nil
		}
		return arr[i], true, nil
	case "$abs":
		if err := nargs(1); err != nil {
			return missing, false, err
		}
		v := vals[0]
		if isNullish(v) {
			return nullValue, true, nil
		}
		if !isNumber(v) {
			return missing, false, errorf(28765, "$abs only supports numeric types, not %s", typeName(v.Type))
		}
		if asFloat(v) < 0 {
			return arith("$mul", v, mustValue(int32(-1))), true, nil
		}
		return v, true, nil
	}
	// $sum, $avg, $min, $max over one array or a list of arguments.
	if len(vals) == 1 && vals[0].Type == bson.TypeArray {
		vals = arrayValues(vals[0])
		found = make([]bool, len(vals))
		for i := range found {
			found[i] = true
		}
	}
	acc := newAccumulator(op)
	for i, v := range vals {
		if found[i] {
			acc.add(v)
		}
	}
	return acc.result(), true, nil
}

// accumulator computes $sum, $avg, $min, $max, $first, $last, $push,
// $addToSet and $count over a group, with mongod's rules: $sum and $avg
// ignore non-numbers, $min and $max ignore null and missing.
type accumulator struct {
	op    string
	sum   bson.RawValue
	n     int
	best  bson.RawValue
	vals  []bson.RawValue
	first bool
}

func newAccumulator(op string) *accumulator {
	return &accumulator{op: op, sum: mustValue(int32(0)), first: true}
}

func (a *accumulator) add(v bson.RawValue) {
	switch a.op {
	case "$sum", "$avg":
		if isNumber(v) {
			a.sum = arith("$inc", a.sum, v)
			a.n++
		}
	case "$count":
		a.n++
	case "$min", "$max":
		if isNullish(v) {
			return
		}
		if a.best.Type == 0 || a.op == "$min" && compareValues(v, a.best) < 0 || a.op == "$max" && compareValues(v, a.best) > 0 {
			a.best = v
		}
	case "$first":
		if a.first {
			a.best, a.first = v, false
		}
	case "$last":
		a.best = v
	case "$push":
		a.vals = append(a.vals, v)
	case "$addToSet":
		if !slices.ContainsFunc(a.vals, func(x bson.RawValue) bool { return compareValues(x, v) == 0 }) {
			a.vals = append(a.vals, v)
		}
	}
}

func (a *accumulator) result() bson.RawValue {
	switch a.op {
	case "$sum":
		return a.sum
	case "$count":
		return mustValue(int32(a.n))
	case "$avg":
		if a.n == 0 {
			return nullValue
		}
		if a.sum.Type == bson.TypeDecimal128 {
			if q, ok := decimalDiv(a.sum, mustValue(int64(a.n))); ok {
				return q
			}
		}
		return mustValue(asFloat(a.sum) / float64(a.n))
	case "$push", "$addToSet":
		return buildArray(a.vals)
	}
	if a.best.Type == 0 {
		return nullValue
	}
	return a.best
}
