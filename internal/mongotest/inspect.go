package mongotest

import "go.mongodb.org/mongo-driver/v2/bson"

// Doc returns the latest committed version of the document with the given
// _id in db.coll, and whether it exists. id is a Go value the driver would
// encode, such as an int, a string or a bson.ObjectID; numbers of any type
// that compare equal find the same document. Writes of open transactions
// are not visible. An id that cannot be encoded finds nothing.
func (s *Server) Doc(db, coll string, id any) (bson.Raw, bool) {
	t, b, err := bson.MarshalValue(id)
	if err != nil {
		return nil, false
	}
	key := valueKey(bson.RawValue{Type: t, Value: b})
	s.mu.Lock()
	defer s.mu.Unlock()
	_, doc := s.eng.lookup(s.eng.coll(db, coll, false), key, nil)
	if doc == nil {
		return nil, false
	}
	return clone(doc), true
}

// Docs returns the committed documents of db.coll in natural (insertion)
// order.
func (s *Server) Docs(db, coll string) []bson.Raw {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := s.eng.scan(s.eng.coll(db, coll, false), nil)
	out := make([]bson.Raw, len(items))
	for i, it := range items {
		out[i] = clone(it.doc)
	}
	return out
}

// OpenTransactions returns how many transactions are in progress, that is
// started and neither committed nor aborted.
func (s *Server) OpenTransactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.eng.active)
}

func clone(d bson.Raw) bson.Raw { return append(bson.Raw(nil), d...) }
