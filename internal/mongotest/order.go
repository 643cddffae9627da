package mongotest

import (
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// sortDocs orders docs by the sort specification spec, stably.
func sortDocs(docs []bson.Raw, spec bson.Raw) {
	sortBy(docs, func(d bson.Raw) bson.Raw { return d }, spec)
}

// sortBy orders xs by the documents doc returns for them, following the
// sort specification spec (checked by checkSort), stably. A path that
// reaches arrays sorts by their smallest element ascending and their
// largest descending, as in mongod; an empty array sorts before null.
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
			if k.key == "$natural" {
				continue // natural order: the caller's
			}
			if c := compareValues(sortKey(a, k.key, dir), sortKey(b, k.key, dir)); c != 0 {
				return c * dir
			}
		}
		return 0
	})
}

// sortKey returns the value doc sorts by on path in direction dir.
func sortKey(doc bson.Raw, path string, dir int) bson.RawValue {
	var cands []bson.RawValue
	emptyArray := false
	for _, v := range pathValues(doc, path) {
		if v.Type != bson.TypeArray {
			cands = append(cands, v)
			continue
		}
		elems := arrayValues(v)
		if len(elems) == 0 {
			emptyArray = true
		}
		cands = append(cands, elems...)
	}
	if len(cands) == 0 {
		if emptyArray {
			return bson.RawValue{Type: bson.TypeMinKey}
		}
		return nullValue
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if compareValues(c, best)*dir < 0 {
			best = c
		}
	}
	return best
}

// checkSort validates a sort specification as mongod does: each key 1 or
// -1; $meta sorts are not supported.
func checkSort(spec bson.Raw) *cmdError {
	for _, k := range fieldsOf(spec) {
		if !isNumber(k.val) || (asFloat(k.val) != 1 && asFloat(k.val) != -1) {
			if d, ok := k.val.DocumentOK(); ok && d.Lookup("$meta").Type != 0 {
				return errorf(codeBadValue, "mongotest does not support $meta sorts")
			}
			return errorf(15975, "$sort key ordering must be 1 (for ascending) or -1 (for descending)")
		}
		if k.key == "" {
			return errorf(40352, "FieldPath cannot be constructed with empty string")
		}
		if k.key == "$natural" && len(fieldsOf(spec)) > 1 {
			return errorf(codeBadValue, "mongotest does not support $natural with other sort keys")
		}
	}
	return nil
}

// checkCollation rejects a collation other than the simple one: mongotest
// compares strings by their bytes only.
func checkCollation(v bson.RawValue) *cmdError {
	if v.Type == 0 {
		return nil
	}
	if d, ok := v.DocumentOK(); ok {
		if loc, _ := d.Lookup("locale").StringValueOK(); loc == "simple" {
			return nil
		}
	}
	return errorf(codeBadValue, "mongotest does not support collations other than {locale: 'simple'}: strings compare by their bytes")
}
