package mongotest

import "go.mongodb.org/mongo-driver/v2/bson"

// docArg returns the document field key of the command, an empty document
// when absent.
func docArg(req *request, key string) (bson.Raw, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil || v.Type == bson.TypeNull {
		return buildDoc(nil), nil
	}
	d, ok := v.DocumentOK()
	if !ok {
		return nil, errorf(codeTypeMismatch, "BSON field '%s.%s' is the wrong type '%s', expected type 'object'", req.name, key, v.Type)
	}
	return d, nil
}

// intArg returns the integer field key of the command, 0 when absent.
func intArg(req *request, key string) (int64, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil {
		return 0, nil
	}
	if isNumber(v) {
		return int64(asFloat(v)), nil
	}
	return 0, errorf(codeTypeMismatch, "BSON field '%s.%s' must be a number", req.name, key)
}

// boolArg returns the boolean field key of the command, false when absent.
func boolArg(req *request, key string) bool {
	v, err := req.body.LookupErr(key)
	if err != nil {
		return false
	}
	if b, ok := v.BooleanOK(); ok {
		return b
	}
	return isNumber(v) && asFloat(v) != 0
}

// docsArg returns the array of documents key of the command.
func docsArg(req *request, key string) ([]bson.Raw, *cmdError) {
	v, err := req.body.LookupErr(key)
	if err != nil || v.Type != bson.TypeArray {
		return nil, errorf(codeFailedToParse, "BSON field '%s.%s' is missing or not an array", req.name, key)
	}
	var out []bson.Raw
	for _, e := range arrayValues(v) {
		d, ok := e.DocumentOK()
		if !ok {
			return nil, errorf(codeTypeMismatch, "BSON field '%s.%s' must be an array of documents", req.name, key)
		}
		out = append(out, d)
	}
	return out, nil
}

// needColl checks that the command names its collection.
func needColl(req *request) *cmdError {
	if req.coll == "" {
		return errorf(codeInvalidNamespace, "Invalid namespace specified for %s", req.name)
	}
	return nil
}

// collDocArgs checks that the command names its collection and returns its
// document fields keys, in order.
func collDocArgs(req *request, keys ...string) ([]bson.Raw, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	out := make([]bson.Raw, len(keys))
	for i, k := range keys {
		d, err := docArg(req, k)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// windowArgs returns the skip and limit fields of the command, a negative
// limit made positive.
func windowArgs(req *request) (skip, limit int64, err *cmdError) {
	if skip, err = intArg(req, "skip"); err != nil {
		return 0, 0, err
	}
	if limit, err = intArg(req, "limit"); err != nil {
		return 0, 0, err
	}
	if limit < 0 {
		limit = -limit
	}
	return skip, limit, nil
}
