package mongotest

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// FailPoint scripts a fault the way MongoDB's failCommand fail point does
// (a server started with enableTestCommands accepts the same settings
// through the configureFailPoint command, which this server also
// understands). A command matches when its name is in Commands and, if
// AppName is set, the connection's handshake carried that application name.
//
// The actions, in the order they are taken: BlockTime delays the command;
// CloseConnection drops the connection without running the command or
// replying; ErrorCode fails the command without running it;
// WriteConcernError runs the command and adds a writeConcernError to its
// successful reply; CloseConnectionAfterApply runs the command (a
// commitTransaction commits) and then drops the connection without
// replying, which is the genuinely ambiguous outcome of a lost connection.
//
// As in mongod, the fail point is evaluated before the command checks out
// its session, so a command it fails or cuts never reaches the
// transaction: an open transaction stays open and may go on (the same
// statement may be sent again and the transaction committed), and a
// statement that carried startTransaction starts none, so the
// transaction's later commands get NoSuchTransaction. A commitTransaction
// failed by ErrorCode or CloseConnection has not committed and may be
// retried.
type FailPoint struct {
	// Commands lists the command names that trigger the fail point
	// (failCommands). It must not be empty.
	Commands []string
	// Times is how many matching commands trigger the fail point before it
	// turns itself off (mode {times: N}); 0 means every matching command
	// until cleared (mode "alwaysOn").
	Times int
	// Skip is how many matching commands pass untouched before the fail
	// point starts acting (mode {skip: N}).
	Skip int
	// AppName restricts the fail point to connections whose handshake
	// carried this application name (appName).
	AppName string
	// ErrorCode is the server error code to fail the command with
	// (errorCode).
	ErrorCode int32
	// ErrorLabels are the labels of the injected error or writeConcernError
	// reply (errorLabels). When nil, the server attaches the labels MongoDB
	// would attach to ErrorCode: TransientTransactionError inside
	// transactions, RetryableWriteError on retryable writes and on
	// commitTransaction and abortTransaction. A non-nil empty slice sends no
	// labels.
	ErrorLabels []string
	// CloseConnection drops the connection without running the command and
	// without a reply (closeConnection).
	CloseConnection bool
	// CloseConnectionAfterApply runs the command and then drops the
	// connection without a reply. It has no MongoDB counterpart; through
	// configureFailPoint it is data field closeConnectionAfterApply.
	CloseConnectionAfterApply bool
	// WriteConcernError, when set, is added to the reply of the command,
	// which runs normally (writeConcernError).
	WriteConcernError *WriteConcernError
	// BlockTime delays the command before anything else happens
	// (blockConnection with blockTimeMS).
	BlockTime time.Duration
}

// WriteConcernError is the writeConcernError a fail point adds to a reply.
type WriteConcernError struct {
	// Code is the error code, for example 64 WriteConcernFailed or 91
	// ShutdownInProgress.
	Code int32
	// Name is the code name; empty means the name MongoDB gives Code.
	Name string
	// Message is the errmsg; empty means a generic message.
	Message string
}

// validate reports settings that make no sense together.
func (fp *FailPoint) validate() error {
	switch {
	case len(fp.Commands) == 0:
		return errors.New("mongotest: fail point without commands")
	case fp.Times < 0 || fp.Skip < 0 || fp.BlockTime < 0:
		return errors.New("mongotest: fail point with a negative count or duration")
	case fp.ErrorCode == 0 && !fp.CloseConnection && !fp.CloseConnectionAfterApply &&
		fp.WriteConcernError == nil && fp.BlockTime == 0:
		return errors.New("mongotest: fail point without an action")
	case fp.ErrorCode < 0:
		return errors.New("mongotest: negative error code")
	}
	return nil
}

// failState is the installed fail point and its counters.
type failState struct {
	fp        FailPoint
	remaining int // -1: unlimited
	skip      int
	fired     int
}

// SetFailPoint installs fp, replacing any fail point set before. It fails
// when fp has no commands, no action, or negative counts.
func (s *Server) SetFailPoint(fp FailPoint) error {
	if err := fp.validate(); err != nil {
		return err
	}
	fp.Commands = slices.Clone(fp.Commands)
	if fp.ErrorLabels != nil {
		fp.ErrorLabels = slices.Clone(fp.ErrorLabels)
	}
	if fp.WriteConcernError != nil {
		w := *fp.WriteConcernError
		fp.WriteConcernError = &w
	}
	st := &failState{fp: fp, remaining: fp.Times, skip: fp.Skip}
	if fp.Times == 0 {
		st.remaining = -1
	}
	s.fpMu.Lock()
	s.fp = st
	s.fpMu.Unlock()
	return nil
}

// ClearFailPoint removes the fail point and returns how many commands it
// acted on.
func (s *Server) ClearFailPoint() int {
	s.fpMu.Lock()
	defer s.fpMu.Unlock()
	n := 0
	if s.fp != nil {
		n = s.fp.fired
	}
	s.fp = nil
	return n
}

// trigger consumes one activation of the fail point for req on c and
// returns the fail point when it acts, nil otherwise.
func (s *Server) trigger(c *conn, req *request) *FailPoint {
	if req.name == "configureFailPoint" {
		return nil
	}
	s.fpMu.Lock()
	defer s.fpMu.Unlock()
	st := s.fp
	if st == nil || !slices.Contains(st.fp.Commands, req.name) {
		return nil
	}
	if st.fp.AppName != "" && st.fp.AppName != c.appName {
		return nil
	}
	if st.skip > 0 {
		st.skip--
		return nil
	}
	st.fired++
	if st.remaining > 0 {
		st.remaining--
		if st.remaining == 0 {
			s.fp = nil
		}
	}
	fp := st.fp
	return &fp
}

// configureFailPoint runs the configureFailPoint command for the
// failCommand fail point.
func (s *Server) configureFailPoint(req *request) (bson.D, *cmdError) {
	if req.db != "admin" {
		return nil, errorf(codeUnauthorized, "configureFailPoint may only be run against the admin database.")
	}
	name, _ := req.body.Lookup("configureFailPoint").StringValueOK()
	if name != "failCommand" {
		return nil, errorf(codeBadValue, "mongotest supports only the failCommand fail point, not %q", name)
	}
	fp, off, err := parseFailCommand(req.body)
	if err != nil {
		return nil, errorf(codeBadValue, "%v", err)
	}
	if off {
		n := s.ClearFailPoint()
		return bson.D{{Key: "count", Value: int32(n)}}, nil
	}
	if err := s.SetFailPoint(fp); err != nil {
		return nil, errorf(codeBadValue, "%v", err)
	}
	return bson.D{{Key: "count", Value: int32(0)}}, nil
}

// parseFailCommand reads the mode and data of a configureFailPoint command.
func parseFailCommand(cmd bson.Raw) (fp FailPoint, off bool, err error) {
	mode := cmd.Lookup("mode")
	switch mode.Type {
	case bson.TypeString:
		switch mode.StringValue() {
		case "off":
			return fp, true, nil
		case "alwaysOn":
		default:
			return fp, false, fmt.Errorf("unknown fail point mode %q", mode.StringValue())
		}
	case bson.TypeEmbeddedDocument:
		m := mode.Document()
		if v, err := m.LookupErr("times"); err == nil {
			n, ok := v.AsInt64OK()
			if !ok || n < 0 {
				return fp, false, errors.New("mode.times must be a non-negative integer")
			}
			if n == 0 {
				return fp, true, nil
			}
			fp.Times = int(n)
		} else if v, err := m.LookupErr("skip"); err == nil {
			n, ok := v.AsInt64OK()
			if !ok || n < 0 {
				return fp, false, errors.New("mode.skip must be a non-negative integer")
			}
			fp.Skip = int(n)
		} else {
			return fp, false, errors.New("mode must have times or skip")
		}
	default:
		return fp, false, errors.New("mode must be a string or a document")
	}
	data, ok := cmd.Lookup("data").DocumentOK()
	if !ok {
		return fp, false, errors.New("data must be a document")
	}
	for _, f := range fieldsOf(data) {
		switch f.key {
		case "failCommands":
			if fp.Commands, err = appendStrings(fp.Commands, f.val, "failCommands"); err != nil {
				return fp, false, err
			}
		case "errorCode":
			n, ok := f.val.AsInt64OK()
			if !ok {
				return fp, false, errors.New("errorCode must be an integer")
			}
			fp.ErrorCode = int32(n)
		case "errorLabels":
			if fp.ErrorLabels, err = appendStrings([]string{}, f.val, "errorLabels"); err != nil {
				return fp, false, err
			}
		case "closeConnection":
			fp.CloseConnection = f.val.Type == bson.TypeBoolean && f.val.Boolean()
		case "closeConnectionAfterApply":
			fp.CloseConnectionAfterApply = f.val.Type == bson.TypeBoolean && f.val.Boolean()
		case "appName":
			fp.AppName, _ = f.val.StringValueOK()
		case "blockTimeMS":
			n, ok := f.val.AsInt64OK()
			if !ok {
				return fp, false, errors.New("blockTimeMS must be an integer")
			}
			if b, _ := data.Lookup("blockConnection").BooleanOK(); b {
				fp.BlockTime = time.Duration(n) * time.Millisecond
			}
		case "writeConcernError":
			w, ok := f.val.DocumentOK()
			if !ok {
				return fp, false, errors.New("writeConcernError must be a document")
			}
			code, _ := w.Lookup("code").AsInt64OK()
			name, _ := w.Lookup("codeName").StringValueOK()
			msg, _ := w.Lookup("errmsg").StringValueOK()
			fp.WriteConcernError = &WriteConcernError{Code: int32(code), Name: name, Message: msg}
		}
	}
	return fp, false, nil
}

// appendStrings appends the strings of the array v to dst; name is the
// field the error message names.
func appendStrings(dst []string, v bson.RawValue, name string) ([]string, error) {
	for _, e := range arrayValues(v) {
		str, ok := e.StringValueOK()
		if !ok {
			return dst, errors.New(name + " must be an array of strings")
		}
		dst = append(dst, str)
	}
	return dst, nil
}
