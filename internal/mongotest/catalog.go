package mongotest

import (
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func prepDrop(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		c := s.eng.coll(req.db, req.coll, false)
		if c != nil && lockedIn(c) {
			return nil, blocked()
		}
		if !c.exists() {
			// The driver ignores NamespaceNotFound from drop; 7.0
			// answers ok.
			return bson.D{}, nil
		}
		s.eng.dropColl(c)
		return bson.D{{Key: "ns", Value: c.ns()}, {Key: "nIndexesWas", Value: int32(1)}}, nil
	}, nil
}

func prepDropDatabase(s *Server, req *request) (op, *cmdError) {
	return func(tx *transaction) (bson.D, *cmdError) {
		var colls []*collection
		for _, c := range s.eng.colls {
			if c.db == req.db && !c.dropped {
				if lockedIn(c) {
					return nil, blocked()
				}
				colls = append(colls, c)
			}
		}
		for _, c := range colls {
			s.eng.dropColl(c)
		}
		return bson.D{{Key: "dropped", Value: req.db}}, nil
	}, nil
}

// genericFields are the fields any command may carry besides its own.
var genericFields = []string{"$db", "lsid", "txnNumber", "autocommit", "startTransaction", "$clusterTime",
	"writeConcern", "readConcern", "comment", "maxTimeMS", "$readPreference", "apiVersion", "apiStrict",
	"apiDeprecationErrors"}

// prepCreate runs create. As on mongod 7.0, creating a collection that
// exists (with the same, here no, options) succeeds; options such as
// validator, capped or timeseries fail, since mongotest would ignore them.
func prepCreate(s *Server, req *request) (op, *cmdError) {
	if err := needColl(req); err != nil {
		return nil, err
	}
	for _, f := range fieldsOf(req.body)[1:] {
		if !slices.Contains(genericFields, f.key) {
			return nil, errorf(codeFailedToParse, "mongotest does not support the create option %s", f.key)
		}
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		if c := s.eng.coll(req.db, req.coll, false); c.exists() || c != nil && tx != nil && c.createdBy == tx {
			return bson.D{}, nil
		}
		if _, err := s.eng.createColl(req.db, req.coll, tx); err != nil {
			return nil, err
		}
		return bson.D{}, nil
	}, nil
}

func prepListCollections(s *Server, req *request) (op, *cmdError) {
	filter, err := docArg(req, "filter")
	if err != nil {
		return nil, err
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		var docs []bson.Raw
		for _, c := range s.eng.colls {
			if c.db != req.db || !c.exists() {
				continue
			}
			d := buildDoc([]field{
				{key: "name", val: mustValue(c.name)},
				{key: "type", val: mustValue("collection")},
				{key: "options", val: docValue(buildDoc(nil))},
				{key: "info", val: docValue(buildDoc([]field{{key: "readOnly", val: mustValue(false)}}))},
			})
			ok, err := matches(d, filter)
			if err != nil {
				return nil, err
			}
			if ok {
				docs = append(docs, d)
			}
		}
		sortDocs(docs, buildDoc([]field{{key: "name", val: mustValue(int32(1))}}))
		return cursorReply(req.db+".$cmd.listCollections", docs), nil
	}, nil
}

func prepKillCursors(s *Server, req *request) (op, *cmdError) {
	var ids any = bson.A{}
	if v, err := req.body.LookupErr("cursors"); err == nil {
		ids = v
	}
	return func(tx *transaction) (bson.D, *cmdError) {
		return bson.D{
			{Key: "cursorsKilled", Value: bson.A{}},
			{Key: "cursorsNotFound", Value: ids},
			{Key: "cursorsAlive", Value: bson.A{}},
			{Key: "cursorsUnknown", Value: bson.A{}},
		}, nil
	}, nil
}
