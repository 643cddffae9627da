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
