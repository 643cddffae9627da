package mongotest

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// op runs a prepared data command against the store with s.mu held; tx is
// the command's transaction, nil outside one. An op that returns a blocked
// error is called again after the lock it waits for is released, and
// resumes where it stopped.
type op func(tx *transaction) (bson.D, *cmdError)

// prepFunc parses a data command into an op.
type prepFunc func(s *Server, req *request) (op, *cmdError)

// dataCommand returns the parser of a command that reads or writes
// documents, nil for other commands.
func (s *Server) dataCommand(name string) prepFunc {
	switch name {
	case "find":
		return prepFind
	case "insert":
		return prepInsert
	case "update":
		return prepUpdate
	case "delete":
		return prepDelete
	case "findAndModify", "findandmodify":
		return prepFindAndModify
	case "count":
		return prepCount
	case "distinct":
		return prepDistinct
	case "createIndexes":
		return prepCreateIndexes
	case "listIndexes":
		return prepListIndexes
	case "dropIndexes", "deleteIndexes":
		return prepDropIndexes
	case "aggregate":
		return prepAggregate
	case "drop":
		return prepDrop
	case "dropDatabase":
		return prepDropDatabase
	case "create":
		return prepCreate
	case "listCollections":
		return prepListCollections
	case "getMore":
		return func(*Server, *request) (op, *cmdError) {
			return nil, errorf(codeCursorNotFound, "cursor id not found: mongotest returns every result in the first batch")
		}
	case "killCursors":
		return prepKillCursors
	}
	return nil
}

// allowedInTxn reports whether a command may run inside a transaction.
func allowedInTxn(name string) bool {
	switch name {
	case "find", "insert", "update", "delete", "findAndModify", "findandmodify",
		"aggregate", "distinct", "getMore", "killCursors", "create":
		return true
	}
	return false
}

// pollInterval bounds how long a waiting writer sleeps before it looks
// again for expired transactions, its own deadline and server shutdown.
const pollInterval = 20 * time.Millisecond

// runData runs a data command with MongoDB's session rules: inside a
// transaction (any error aborts it), as a retryable write (a retry of the
// same txnNumber gets the first reply again), or on its own, waiting while
// a transaction holds a lock on a document it writes.
func (s *Server) runData(req *request, prep prepFunc) (bson.D, *cmdError) {
	if req.inTxn && !allowedInTxn(req.name) {
		// mongod refuses the command before it checks out the session:
		// an open transaction stays open (and may commit), and a
		// command that carried startTransaction starts none.
		return nil, errorf(codeOperationNotSupportedInTxn, "Cannot run '%s' in a multi-document transaction.", req.name)
	}
	run, err := prep(s, req)
	if err == nil {
		err = checkCollations(req)
	}
	if err != nil {
		s.failTxn(req)
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.eng.reap(now, s.cfg.txnLifetime, sessionTimeoutMinutes*time.Minute)

	if req.inTxn {
		tx, err := s.txnFor(req, now)
		if err != nil {
			return nil, err
		}
		out, err := run(tx)
		if err != nil || hasWriteErrors(out) {
			s.eng.abort(tx)
		}
		return out, err
	}

	var sess *session
	if req.hasTxnNumber {
		if !isWriteCommand(req.name) {
			return nil, errorf(codeInvalidOptions, "txnNumber may only be provided for multi-document transactions and retryable write commands")
		}
		if req.lsid == "" {
			return nil, errorf(codeInvalidOptions, "Transaction number requires a session ID to also be specified")
		}
		sess = s.eng.session(req.lsid, now)
		switch n := req.txnNumber; {
		case n < sess.txnNumber:
			return nil, errorf(codeTransactionTooOld, "Retryable write with txnNumber %d is prohibited on session %s because a newer retryable write with txnNumber %d has already started", n, req.lsidText, sess.txnNumber)
		case n == sess.txnNumber:
			if sess.state == txnNone && sess.retryReply != nil {
				return sess.retryReply, nil
			}
			if sess.state != txnNone {
				return nil, errorf(codeIncompleteTransactionHistory, "Cannot run a retryable write with txnNumber %d, which a transaction used", n)
			}
		default:
			if sess.state == txnInProgress {
				s.eng.abort(sess.txn)
			}
			sess.txnNumber, sess.state, sess.txn, sess.retryReply = n, txnNone, nil, nil
		}
	}

	var deadline time.Time
	if req.maxTime > 0 {
		deadline = now.Add(req.maxTime)
	}
	for {
		out, err := run(nil)
		if err == nil || !err.blocked {
			if err == nil && sess != nil && sess.txnNumber == req.txnNumber && sess.state == txnNone {
				sess.retryReply = out
			}
			return out, err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil, errorf(codeMaxTimeMSExpired, "operation exceeded time limit")
		}
		changed := s.eng.changed
		s.mu.Unlock()
		t := time.NewTimer(pollInterval)
		select {
		case <-changed:
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
		s.mu.Lock()
		select {
		case <-s.done:
			return nil, errorf(codeShutdownInProgress, "The server is shutting down")
		default:
		}
		s.eng.reap(time.Now(), s.cfg.txnLifetime, sessionTimeoutMinutes*time.Minute)
	}
}

// hasWriteErrors reports whether a write reply carries writeErrors.
func hasWriteErrors(out bson.D) bool {
	for _, e := range out {
		if e.Key == "writeErrors" {
			return true
		}
	}
	return false
}

// checkCollations rejects the collations mongotest cannot honour, in the
// command and in the statements of a write, and the options that would
// change the answer it gives (arrayFilters, explain, min, max, returnKey,
// showRecordId, tailable) rather than ignore them.
func checkCollations(req *request) *cmdError {
	if err := checkCollation(req.body.Lookup("collation")); err != nil {
		return err
	}
	if req.body.Lookup("arrayFilters").Type != 0 {
		return errorf(codeFailedToParse, "mongotest does not support arrayFilters")
	}
	for _, opt := range []string{"explain", "min", "max", "returnKey", "showRecordId", "tailable"} {
		if v := req.body.Lookup(opt); v.Type != 0 && truthy(v) {
			return errorf(codeFailedToParse, "mongotest does not support the option %s of %s", opt, req.name)
		}
	}
	for _, key := range []string{"updates", "deletes"} {
		for _, st := range arrayValues(req.body.Lookup(key)) {
			if d, ok := st.DocumentOK(); ok {
				if err := checkCollation(d.Lookup("collation")); err != nil {
					return err
				}
				if d.Lookup("arrayFilters").Type != 0 {
					return errorf(codeFailedToParse, "mongotest does not support arrayFilters")
				}
			}
		}
	}
	return nil
}
