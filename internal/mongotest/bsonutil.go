package mongotest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// field is one element of a document held as a key and a raw value.
type field struct {
	key string
	val bson.RawValue
}

// fieldsOf returns the elements of doc in order. A malformed doc yields the
// elements that could be read.
func fieldsOf(doc bson.Raw) []field {
	elems, _ := doc.Elements()
	fs := make([]field, 0, len(elems))
	for _, e := range elems {
		fs = append(fs, field{key: e.Key(), val: e.Value()})
	}
	return fs
}

// buildDoc encodes fs as a new document.
func buildDoc(fs []field) bson.Raw {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	for _, f := range fs {
		dst = bsoncore.AppendHeader(dst, bsoncore.Type(f.val.Type), f.key)
		dst = append(dst, f.val.Value...)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return bson.Raw(dst)
}

// buildArray encodes vals as a BSON array value.
func buildArray(vals []bson.RawValue) bson.RawValue {
	idx, dst := bsoncore.AppendArrayStart(nil)
	for i, v := range vals {
		dst = bsoncore.AppendHeader(dst, bsoncore.Type(v.Type), arrayKey(i))
		dst = append(dst, v.Value...)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	return bson.RawValue{Type: bson.TypeArray, Value: dst}
}

// arrayKey returns the key of array element i.
func arrayKey(i int) string { return strconv.Itoa(i) }

// docValue wraps doc as an embedded document value.
func docValue(doc bson.Raw) bson.RawValue {
	return bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: doc}
}

// arrayValues returns the elements of an array value.
func arrayValues(v bson.RawValue) []bson.RawValue {
	arr, ok := v.ArrayOK()
	if !ok {
		return nil
	}
	vals, _ := arr.Values()
	return vals
}

// mustValue marshals a Go value to a raw BSON value.
func mustValue(v any) bson.RawValue {
	t, b, err := bson.MarshalValue(v)
	if err != nil {
		panic("mongotest: marshal value: " + err.Error())
	}
	return bson.RawValue{Type: t, Value: b}
}

// int64Value returns v as an int64 BSON value.
func int64Value(v int64) bson.RawValue {
	return bson.RawValue{Type: bson.TypeInt64, Value: binary.LittleEndian.AppendUint64(nil, uint64(v))}
}

// lookupPath returns the value at a dotted path in doc, descending through
// embedded documents and, with numeric path parts, arrays.
func lookupPath(doc bson.Raw, path string) (bson.RawValue, bool) {
	v, err := doc.LookupErr(strings.Split(path, ".")...)
	if err != nil {
		return bson.RawValue{}, false
	}
	return v, true
}

// typeOrder returns the position of t in MongoDB's cross-type sort order.
func typeOrder(t bson.Type) int {
	switch t {
	case bson.TypeMinKey:
		return 1
	case bson.TypeNull, bson.TypeUndefined:
		return 2
	case bson.TypeDouble, bson.TypeInt32, bson.TypeInt64, bson.TypeDecimal128:
		return 3
	case bson.TypeString, bson.TypeSymbol:
		return 4
	case bson.TypeEmbeddedDocument:
		return 5
	case bson.TypeArray:
		return 6
	case bson.TypeBinary:
		return 7
	case bson.TypeObjectID:
		return 8
	case bson.TypeBoolean:
		return 9
	case bson.TypeDateTime:
		return 10
	case bson.TypeTimestamp:
		return 11
	case bson.TypeRegex:
		return 12
	case bson.TypeMaxKey:
		return 100
	}
	return 50
}

// isNumber reports whether v is a numeric BSON value.
func isNumber(v bson.RawValue) bool { return typeOrder(v.Type) == 3 }

// asFloat returns a numeric value as a float64.
func asFloat(v bson.RawValue) float64 {
	switch v.Type {
	case bson.TypeDouble:
		return v.Double()
	case bson.TypeInt32:
		return float64(v.Int32())
	case bson.TypeInt64:
		return float64(v.Int64())
	case bson.TypeDecimal128:
		f, err := strconv.ParseFloat(v.Decimal128().String(), 64)
		if err != nil {
			return math.NaN()
		}
		return f
	}
	return math.NaN()
}

// compareValues orders two BSON values as MongoDB does: first by type
// class, then by value within the class.
func compareValues(a, b bson.RawValue) int {
	ta, tb := typeOrder(a.Type), typeOrder(b.Type)
	if ta != tb {
		return cmp.Compare(ta, tb)
	}
	switch ta {
	case 1, 2, 100:
		return 0
	case 3:
		if a.Type != bson.TypeDouble && a.Type != bson.TypeDecimal128 &&
			b.Type != bson.TypeDouble && b.Type != bson.TypeDecimal128 {
			return cmp.Compare(a.AsInt64(), b.AsInt64())
		}
		if a.Type == bson.TypeDecimal128 || b.Type == bson.TypeDecimal128 {
			if c, ok := compareDecimal(a, b); ok {
				return c
			}
		}
		fa, fb := asFloat(a), asFloat(b)
		switch {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		case fa == fb:
			return 0
		case math.IsNaN(fa) && math.IsNaN(fb):
			return 0
		case math.IsNaN(fa):
			return -1
		default:
			return 1
		}
	case 4:
		return strings.Compare(stringOf(a), stringOf(b))
	case 5:
		return compareDocs(a.Document(), b.Document(), true)
	case 6:
		return compareDocs(bson.Raw(a.Array()), bson.Raw(b.Array()), false)
	case 7:
		sa, da := a.Binary()
		sb, db := b.Binary()
		if c := cmp.Compare(len(da), len(db)); c != 0 {
			return c
		}
		if c := cmp.Compare(int(sa), int(sb)); c != 0 {
			return c
		}
		return bytes.Compare(da, db)
	case 8:
		oa, ob := a.ObjectID(), b.ObjectID()
		return bytes.Compare(oa[:], ob[:])
	case 9:
		ba, bb := a.Boolean(), b.Boolean()
		switch {
		case ba == bb:
			return 0
		case !ba:
			return -1
		default:
			return 1
		}
	case 10:
		return cmp.Compare(a.DateTime(), b.DateTime())
	case 11:
		at, ai := a.Timestamp()
		bt, bi := b.Timestamp()
		if at != bt {
			return cmp.Compare(int64(at), int64(bt))
		}
		return cmp.Compare(int64(ai), int64(bi))
	}
	return bytes.Compare(a.Value, b.Value)
}

// stringOf returns the text of a string or symbol value.
func stringOf(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	if s, ok := v.SymbolOK(); ok {
		return s
	}
	return ""
}

// compareDocs compares two documents (or arrays when withKeys is false)
// element by element.
func compareDocs(a, b bson.Raw, withKeys bool) int {
	fa, fb := fieldsOf(a), fieldsOf(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if c := cmp.Compare(typeOrder(fa[i].val.Type), typeOrder(fb[i].val.Type)); c != 0 {
			return c
		}
		if withKeys {
			if c := strings.Compare(fa[i].key, fb[i].key); c != 0 {
				return c
			}
		}
		if c := compareValues(fa[i].val, fb[i].val); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(fa), len(fb))
}

// valueKey returns a string identifying v for the unique _id index: numbers
// that compare equal share a key whatever their BSON type.
func valueKey(v bson.RawValue) string {
	if isNumber(v) {
		f := asFloat(v)
		if v.Type != bson.TypeDouble && v.Type != bson.TypeDecimal128 {
			return "n" + strconv.FormatInt(v.AsInt64(), 10)
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<62 {
			return "n" + strconv.FormatInt(int64(f), 10)
		}
		return "f" + strconv.FormatFloat(f, 'g', -1, 64)
	}
	if v.Type == bson.TypeSymbol {
		return "s" + stringOf(v)
	}
	if v.Type == bson.TypeString {
		return "s" + stringOf(v)
	}
	return string([]byte{byte(v.Type)}) + string(v.Value)
}

// shellString formats v the way mongod's error messages show values: numbers
// bare, strings double-quoted, ObjectId('...'), documents and arrays in
// braces and brackets.
func shellString(v bson.RawValue) string {
	switch v.Type {
	case bson.TypeInt32:
		return strconv.FormatInt(int64(v.Int32()), 10)
	case bson.TypeInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case bson.TypeDouble:
		return strconv.FormatFloat(v.Double(), 'g', -1, 64)
	case bson.TypeString:
		return strconv.Quote(v.StringValue())
	case bson.TypeObjectID:
		return "ObjectId('" + v.ObjectID().Hex() + "')"
	case bson.TypeBoolean:
		return strconv.FormatBool(v.Boolean())
	case bson.TypeNull:
		return "null"
	case bson.TypeEmbeddedDocument:
		fs := fieldsOf(v.Document())
		if len(fs) == 0 {
			return "{}"
		}
		parts := make([]string, len(fs))
		for i, f := range fs {
			parts[i] = f.key + ": " + shellString(f.val)
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case bson.TypeArray:
		vals := arrayValues(v)
		parts := make([]string, len(vals))
		for i, e := range vals {
			parts[i] = shellString(e)
		}
		return "[ " + strings.Join(parts, ", ") + " ]"
	}
	return v.String()
}
