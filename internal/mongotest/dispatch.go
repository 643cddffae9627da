package mongotest

import (
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// request is a parsed command.
type request struct {
	name string
	db   string
	coll string
	body bson.Raw

	lsid     string // raw session id bytes, "" without lsid
	lsidText string

	hasTxnNumber bool
	txnNumber    int64
	inTxn        bool // autocommit field present
	autocommit   bool
	startTxn     bool
	maxTime      time.Duration
}

// parseRequest reads the fields of a command document every command
// shares. db is the database of a legacy OP_QUERY, "" for OP_MSG.
func parseRequest(body bson.Raw, db string) (*request, *cmdError) {
	fs := fieldsOf(body)
	if len(fs) == 0 {
		return nil, errorf(codeFailedToParse, "empty command document")
	}
	req := &request{name: fs[0].key, db: db, body: body}
	if s, ok := fs[0].val.StringValueOK(); ok {
		req.coll = s
	}
	for _, f := range fs[1:] {
		switch f.key {
		case "$db":
			s, ok := f.val.StringValueOK()
			if !ok {
				return nil, errorf(codeFailedToParse, "$db must be a string")
			}
			req.db = s
		case "lsid":
			d, ok := f.val.DocumentOK()
			if !ok {
				return nil, errorf(codeFailedToParse, "lsid must be a document")
			}
			_, id, ok := d.Lookup("id").BinaryOK()
			if !ok {
				return nil, errorf(codeFailedToParse, "lsid.id must be binary")
			}
			req.lsid = string(id)
			req.lsidText = formatSessionID(id)
		case "txnNumber":
			n, ok := f.val.AsInt64OK()
			if !ok {
				return nil, errorf(codeFailedToParse, "txnNumber must be an integer")
			}
			req.hasTxnNumber, req.txnNumber = true, n
		case "autocommit":
			b, ok := f.val.BooleanOK()
			if !ok {
				return nil, errorf(codeFailedToParse, "autocommit must be a boolean")
			}
			req.inTxn, req.autocommit = true, b
		case "startTransaction":
			b, ok := f.val.BooleanOK()
			if !ok {
				return nil, errorf(codeFailedToParse, "startTransaction must be a boolean")
			}
			req.startTxn = b
		case "maxTimeMS":
			if n, ok := f.val.AsInt64OK(); ok && n > 0 {
				req.maxTime = time.Duration(n) * time.Millisecond
			}
		}
	}
	if req.db == "" {
		return nil, errorf(codeFailedToParse, "command %s has no $db", req.name)
	}
	return req, nil
}

// isWriteCommand reports whether name is a retryable write command.
func isWriteCommand(name string) bool {
	switch name {
	case "insert", "update", "delete", "findAndModify":
		return true
	}
	return false
}

// execute runs one command for connection c and returns the reply, or
// hangup when the connection must be closed without one.
func (s *Server) execute(c *conn, body bson.Raw, db string, legacy bool) (reply bson.Raw, hangup bool) {
	req, perr := parseRequest(body, db)
	if perr != nil {
		return s.marshalReply(s.errorDoc(&request{}, perr, nil)), false
	}
	seq := s.logCommand(c, req)
	if legacy && !isMonitoring(req.name) {
		err := errorf(codeUnsupportedOpQueryCommand, "Unsupported OP_QUERY command: %s. The client driver may require an upgrade.", req.name)
		doc := s.errorDoc(req, err, nil)
		s.logOutcome(seq, err.code, labelsOf(doc), false, false)
		return s.marshalReply(doc), false
	}

	fp := s.trigger(c, req)
	if fp != nil {
		if fp.BlockTime > 0 && !s.sleep(fp.BlockTime) {
			s.logOutcome(seq, 0, nil, true, true)
			return nil, true
		}
		if fp.CloseConnection {
			s.logOutcome(seq, 0, nil, true, true)
			return nil, true
		}
		if fp.ErrorCode != 0 {
			err := &cmdError{
				code:           fp.ErrorCode,
				msg:            "Failing command via 'failCommand' failpoint",
				labels:         fp.ErrorLabels,
				explicitLabels: fp.ErrorLabels != nil,
			}
			// mongod evaluates failCommand before it checks out the
			// session: the command never reaches the transaction, which
			// stays as it was (open, or not started at all when the
			// command carried startTransaction).
			doc := s.errorDoc(req, err, nil)
			s.logOutcome(seq, err.code, labelsOf(doc), true, false)
			return s.marshalReply(doc), false
		}
	}

	out, err := s.run(c, req)
	var doc bson.D
	if err != nil {
		doc = s.errorDoc(req, err, nil)
	} else {
		doc = append(slices.Clip(out), bson.E{Key: "ok", Value: 1.0})
		if fp != nil && fp.WriteConcernError != nil {
			doc = s.addWriteConcernError(req, doc, fp)
		}
	}
	code := int32(0)
	if err != nil {
		code = err.code
	}
	if fp != nil && fp.CloseConnectionAfterApply {
		s.logOutcome(seq, code, labelsOf(doc), true, true)
		return nil, true
	}
	s.logOutcome(seq, code, labelsOf(doc), fp != nil, false)
	return s.marshalReply(doc), false
}

// labelsOf returns the errorLabels of a reply.
func labelsOf(doc bson.D) []string {
	for _, e := range doc {
		if e.Key == "errorLabels" {
			if a, ok := e.Value.(bson.A); ok {
				out := make([]string, 0, len(a))
				for _, v := range a {
					if s, ok := v.(string); ok {
						out = append(out, s)
					}
				}
				return out
			}
		}
	}
	return nil
}

// errorDoc builds the {ok: 0} reply for err.
func (s *Server) errorDoc(req *request, err *cmdError, extra bson.D) bson.D {
	doc := append(bson.D{}, extra...)
	doc = append(doc,
		bson.E{Key: "ok", Value: 0.0},
		bson.E{Key: "errmsg", Value: err.msg},
		bson.E{Key: "code", Value: err.code},
	)
	if name := codeName(err.code); name != "" {
		doc = append(doc, bson.E{Key: "codeName", Value: name})
	}
	doc = append(doc, err.details...)
	labels := err.labels
	if !err.explicitLabels {
		labels = append(append([]string(nil), labels...), autoLabels(err.code, req, false)...)
	}
	return appendLabels(doc, labels)
}

// addWriteConcernError adds the fail point's writeConcernError, and the
// labels that go with it, to a successful reply.
func (s *Server) addWriteConcernError(req *request, doc bson.D, fp *FailPoint) bson.D {
	w := fp.WriteConcernError
	name := w.Name
	if name == "" {
		name = codeName(w.Code)
	}
	msg := w.Message
	if msg == "" {
		msg = "Failing command via 'failCommand' failpoint"
	}
	doc = append(doc, bson.E{Key: "writeConcernError", Value: bson.D{
		{Key: "code", Value: w.Code},
		{Key: "codeName", Value: name},
		{Key: "errmsg", Value: msg},
	}})
	labels := fp.ErrorLabels
	if labels == nil {
		labels = autoLabels(w.Code, req, true)
		if req.name == "commitTransaction" || req.name == "abortTransaction" {
			// A write concern error on commit says nothing about the
			// transaction having been rolled back.
			labels = removeLabel(labels, "TransientTransactionError")
		}
	}
	return appendLabels(doc, labels)
}

// appendLabels adds labels to doc as its errorLabels, nothing when there
// are none.
func appendLabels(doc bson.D, labels []string) bson.D {
	if len(labels) > 0 {
		doc = append(doc, bson.E{Key: "errorLabels", Value: toArray(labels)})
	}
	return doc
}

func removeLabel(labels []string, l string) []string {
	out := labels[:0:0]
	for _, x := range labels {
		if x != l {
			out = append(out, x)
		}
	}
	return out
}

// marshalReply adds the cluster time to doc and encodes it.
func (s *Server) marshalReply(doc bson.D) bson.Raw {
	s.mu.Lock()
	clock := s.eng.clock
	s.mu.Unlock()
	ts := bson.Timestamp{T: uint32(s.started.Unix()), I: uint32(clock) + 1}
	doc = append(doc,
		bson.E{Key: "$clusterTime", Value: bson.D{
			{Key: "clusterTime", Value: ts},
			{Key: "signature", Value: bson.D{
				{Key: "hash", Value: bson.Binary{Subtype: 0, Data: make([]byte, 20)}},
				{Key: "keyId", Value: int64(0)},
			}},
		}},
		bson.E{Key: "operationTime", Value: ts},
	)
	raw, err := bson.Marshal(doc)
	if err != nil {
		fallback, _ := bson.Marshal(bson.D{
			{Key: "ok", Value: 0.0},
			{Key: "errmsg", Value: "mongotest: cannot encode reply: " + err.Error()},
			{Key: "code", Value: int32(1)},
			{Key: "codeName", Value: "InternalError"},
		})
		return fallback
	}
	return raw
}

// failTxn aborts the transaction of req after a command of the
// transaction failed before it ran (malformed arguments), as MongoDB aborts
// a transaction whose command fails once the session is checked out. commitTransaction and abortTransaction leave the transaction as it
// is.
func (s *Server) failTxn(req *request) {
	if !req.inTxn || !req.hasTxnNumber || req.lsid == "" ||
		req.name == "commitTransaction" || req.name == "abortTransaction" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.eng.session(req.lsid, time.Now())
	switch {
	case req.txnNumber == sess.txnNumber && sess.state == txnInProgress:
		s.eng.abort(sess.txn)
	case req.txnNumber > sess.txnNumber && req.startTxn:
		s.eng.abort(s.eng.begin(sess, req.txnNumber, time.Now()))
	}
}

// run executes a command that the fail point let through.
func (s *Server) run(c *conn, req *request) (bson.D, *cmdError) {
	switch req.name {
	case "hello", "isMaster", "ismaster":
		return s.hello(c, req), nil
	case "ping":
		return bson.D{}, nil
	case "buildInfo", "buildinfo":
		return bson.D{
			{Key: "version", Value: "7.0.0"},
			{Key: "gitVersion", Value: "mongotest"},
			{Key: "versionArray", Value: bson.A{int32(7), int32(0), int32(0), int32(0)}},
			{Key: "bits", Value: int32(64)},
			{Key: "maxBsonObjectSize", Value: int32(maxBSONObjectSize)},
		}, nil
	case "endSessions", "killSessions":
		return s.endSessions(req)
	case "configureFailPoint":
		return s.configureFailPoint(req)
	case "commitTransaction", "abortTransaction":
		return s.endTransaction(req)
	}
	if prep := s.dataCommand(req.name); prep != nil {
		return s.runData(req, prep)
	}
	return nil, errorf(codeCommandNotFound, "no such command: '%s'", req.name)
}

// hello answers hello and isMaster as the primary of a one-member replica
// set. It leaves out topologyVersion so that the driver polls instead of
// streaming heartbeats.
func (s *Server) hello(c *conn, req *request) bson.D {
	if name, ok := req.body.Lookup("client", "application", "name").StringValueOK(); ok {
		c.appName = name
	}
	now := time.Now()
	var d bson.D
	if req.name == "hello" {
		d = append(d, bson.E{Key: "isWritablePrimary", Value: true})
	} else {
		d = append(d, bson.E{Key: "ismaster", Value: true})
	}
	if ok, _ := req.body.Lookup("helloOk").BooleanOK(); ok {
		d = append(d, bson.E{Key: "helloOk", Value: true})
	}
	return append(d,
		bson.E{Key: "hosts", Value: bson.A{s.host}},
		bson.E{Key: "setName", Value: s.cfg.replicaSet},
		bson.E{Key: "setVersion", Value: int32(1)},
		bson.E{Key: "secondary", Value: false},
		bson.E{Key: "primary", Value: s.host},
		bson.E{Key: "me", Value: s.host},
		bson.E{Key: "electionId", Value: s.electionID},
		bson.E{Key: "lastWrite", Value: bson.D{{Key: "lastWriteDate", Value: bson.NewDateTimeFromTime(now)}}},
		bson.E{Key: "maxBsonObjectSize", Value: int32(maxBSONObjectSize)},
		bson.E{Key: "maxMessageSizeBytes", Value: int32(maxMessageSizeBytes)},
		bson.E{Key: "maxWriteBatchSize", Value: int32(maxWriteBatchSize)},
		bson.E{Key: "localTime", Value: bson.NewDateTimeFromTime(now)},
		bson.E{Key: "logicalSessionTimeoutMinutes", Value: int32(sessionTimeoutMinutes)},
		bson.E{Key: "connectionId", Value: c.id},
		bson.E{Key: "minWireVersion", Value: int32(0)},
		bson.E{Key: "maxWireVersion", Value: int32(maxWireVersion)},
		bson.E{Key: "readOnly", Value: false},
	)
}

// endSessions runs endSessions and killSessions: it forgets the listed
// sessions, aborting their open transactions. (MongoDB aborts them at once
// for killSessions and when it reaps the sessions for endSessions.)
func (s *Server) endSessions(req *request) (bson.D, *cmdError) {
	v := req.body.Lookup(req.name)
	if v.Type != bson.TypeArray {
		return nil, errorf(codeFailedToParse, "%s must be an array", req.name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range arrayValues(v) {
		d, ok := e.DocumentOK()
		if !ok {
			continue
		}
		if _, id, ok := d.Lookup("id").BinaryOK(); ok {
			s.eng.endSession(string(id))
		}
	}
	return bson.D{}, nil
}

// checkTxnFields validates the session fields of a transaction command.
func checkTxnFields(req *request) *cmdError {
	switch {
	case req.lsid == "":
		return errorf(codeInvalidOptions, "Transaction requires a session ID (lsid)")
	case !req.hasTxnNumber:
		return errorf(codeInvalidOptions, "'autocommit' field requires a transaction number to also be specified")
	case !req.inTxn || req.autocommit:
		return errorf(codeInvalidOptions, "autocommit must be false in a transaction")
	}
	return nil
}

// txnFor returns the open transaction req belongs to, starting it on
// startTransaction. s.mu is held.
func (s *Server) txnFor(req *request, now time.Time) (*transaction, *cmdError) {
	if err := checkTxnFields(req); err != nil {
		return nil, err
	}
	sess := s.eng.session(req.lsid, now)
	n := req.txnNumber
	if n < sess.txnNumber {
		return nil, errorf(codeTransactionTooOld, "Cannot start transaction %d on session %s because a newer transaction %d has already started", n, req.lsidText, sess.txnNumber)
	}
	if req.startTxn {
		if n == sess.txnNumber {
			switch sess.state {
			case txnCommitted:
				return nil, errorf(codeTransactionCommitted, "Transaction with { txnNumber: %d } has been committed.", n)
			case txnAborted:
				return nil, errorf(codeNoSuchTransaction, "Transaction with { txnNumber: %d } has been aborted.", n)
			default:
				return nil, errorf(codeConflictingOperationInProgress, "Cannot start a transaction at given transaction number %d: a transaction or retryable write with the same number already ran", n)
			}
		}
		return s.eng.begin(sess, n, now), nil
	}
	if n > sess.txnNumber {
		return nil, errorf(codeNoSuchTransaction, "Given transaction number %d does not match any in-progress transactions. The active transaction number is %d", n, sess.txnNumber)
	}
	switch sess.state {
	case txnInProgress:
		return sess.txn, nil
	case txnCommitted:
		return nil, errorf(codeTransactionCommitted, "Transaction with { txnNumber: %d } has been committed.", n)
	case txnAborted:
		return nil, errorf(codeNoSuchTransaction, "Transaction with { txnNumber: %d } has been aborted.", n)
	}
	return nil, errorf(codeNoSuchTransaction, "Given transaction number %d does not match any in-progress transactions.", n)
}

// endTransaction runs commitTransaction and abortTransaction. A commit of
// an already committed transaction number succeeds again, as in MongoDB.
func (s *Server) endTransaction(req *request) (bson.D, *cmdError) {
	if req.db != "admin" {
		return nil, errorf(codeUnauthorized, "%s may only be run against the admin database.", req.name)
	}
	if err := checkTxnFields(req); err != nil {
		return nil, err
	}
	if req.startTxn {
		return nil, errorf(codeOperationNotSupportedInTxn, "Cannot start a transaction with %s", req.name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.eng.reap(now, s.cfg.txnLifetime, sessionTimeoutMinutes*time.Minute)
	sess := s.eng.session(req.lsid, now)
	n := req.txnNumber
	if n < sess.txnNumber {
		return nil, errorf(codeTransactionTooOld, "Cannot %s transaction %d on session %s because a newer transaction %d has already started", req.name, n, req.lsidText, sess.txnNumber)
	}
	if n > sess.txnNumber || sess.state == txnNone {
		return nil, errorf(codeNoSuchTransaction, "Given transaction number %d does not match any in-progress transactions. The active transaction number is %d", n, sess.txnNumber)
	}
	commit := req.name == "commitTransaction"
	switch sess.state {
	case txnInProgress:
		if commit {
			s.eng.commit(sess.txn)
		} else {
			s.eng.abort(sess.txn)
		}
		return bson.D{}, nil
	case txnCommitted:
		if commit {
			return bson.D{}, nil
		}
		return nil, errorf(codeTransactionCommitted, "Transaction with { txnNumber: %d } has been committed.", n)
	}
	return nil, errorf(codeNoSuchTransaction, "Transaction with { txnNumber: %d } has been aborted.", n)
}
