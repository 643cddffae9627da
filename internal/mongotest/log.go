package mongotest

import (
	"fmt"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// maxLogEntries bounds the command log; past it the oldest half is dropped.
const maxLogEntries = 1 << 16

// Command is one command the server received, with its outcome.
type Command struct {
	// Seq numbers the commands of a server in the order received, from 1.
	Seq int
	// Name is the command name, for example "insert" or "commitTransaction".
	Name string
	// Database is the database the command ran against ($db).
	Database string
	// Collection is the collection named by the command, "" when none.
	Collection string
	// SessionID identifies the logical session (lsid); it equals
	// SessionID(sess.ID()) for the driver's session, "" when absent.
	SessionID string
	// TxnNumber is the transaction number; meaningful when HasTxnNumber.
	TxnNumber int64
	// HasTxnNumber reports whether the command carried a txnNumber.
	HasTxnNumber bool
	// StartTransaction reports startTransaction: true.
	StartTransaction bool
	// InTransaction reports autocommit: false, that is a command of a
	// multi-document transaction.
	InTransaction bool
	// ConnectionID is the server's id of the connection (connectionId in
	// hello).
	ConnectionID int64
	// Body is the command document, document sequences folded in as arrays.
	Body bson.Raw
	// ErrorCode is the code of the error reply, 0 for success or no reply.
	ErrorCode int32
	// ErrorLabels are the labels of the error reply.
	ErrorLabels []string
	// FailPoint reports that the fail point acted on the command.
	FailPoint bool
	// Hangup reports that the server closed the connection instead of
	// replying.
	Hangup bool
}

// String formats the command for test failure messages.
func (c Command) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s", c.Seq, c.Name)
	if c.Collection != "" {
		fmt.Fprintf(&b, " %s.%s", c.Database, c.Collection)
	}
	if c.SessionID != "" {
		fmt.Fprintf(&b, " lsid=%s", c.SessionID)
	}
	if c.HasTxnNumber {
		fmt.Fprintf(&b, " txn=%d", c.TxnNumber)
	}
	if c.StartTransaction {
		b.WriteString(" start")
	}
	if c.FailPoint {
		b.WriteString(" failpoint")
	}
	switch {
	case c.Hangup:
		b.WriteString(" -> hangup")
	case c.ErrorCode != 0:
		fmt.Fprintf(&b, " -> error %d %v", c.ErrorCode, c.ErrorLabels)
	}
	return b.String()
}

// isMonitoring reports whether a command name belongs to the driver's
// handshake and heartbeats.
func isMonitoring(name string) bool {
	return name == "hello" || name == "isMaster" || name == "ismaster"
}

// Commands returns the commands received so far, in order, leaving out the
// driver's handshakes and heartbeats (hello, isMaster).
func (s *Server) Commands() []Command {
	all := s.AllCommands()
	return slices.DeleteFunc(all, func(c Command) bool { return isMonitoring(c.Name) })
}

// CommandNames returns the names of Commands.
func (s *Server) CommandNames() []string {
	cmds := s.Commands()
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Name
	}
	return names
}

// AllCommands returns every command received so far, in order, hello and
// isMaster included.
func (s *Server) AllCommands() []Command {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	out := make([]Command, len(s.log))
	for i, c := range s.log {
		c.ErrorLabels = slices.Clone(c.ErrorLabels)
		out[i] = c
	}
	return out
}

// ResetCommands empties the command log.
func (s *Server) ResetCommands() {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.logBase += len(s.log)
	s.log = nil
}

// logCommand appends req to the log and returns its sequence number.
func (s *Server) logCommand(c *conn, req *request) int {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if len(s.log) >= maxLogEntries {
		drop := len(s.log) / 2
		s.log = slices.Delete(s.log, 0, drop)
		s.logBase += drop
	}
	seq := s.logBase + len(s.log) + 1
	s.log = append(s.log, Command{
		Seq:              seq,
		Name:             req.name,
		Database:         req.db,
		Collection:       req.coll,
		SessionID:        req.lsidText,
		TxnNumber:        req.txnNumber,
		HasTxnNumber:     req.hasTxnNumber,
		StartTransaction: req.startTxn,
		InTransaction:    req.inTxn,
		ConnectionID:     c.id,
		Body:             slices.Clone(req.body),
	})
	return seq
}

// logOutcome records the outcome of the command with sequence number seq.
func (s *Server) logOutcome(seq int, code int32, labels []string, failPoint, hangup bool) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	i := seq - s.logBase - 1
	if i < 0 || i >= len(s.log) {
		return
	}
	e := &s.log[i]
	e.ErrorCode = code
	e.ErrorLabels = slices.Clone(labels)
	e.FailPoint = failPoint
	e.Hangup = hangup
}

// SessionID returns the text form of a logical session id as it appears in
// Command.SessionID. lsid is the session document {id: UUID}, as returned
// by the driver's Session.ID; it returns "" when lsid has no binary id.
func SessionID(lsid bson.Raw) string {
	_, data, ok := lsid.Lookup("id").BinaryOK()
	if !ok {
		return ""
	}
	return formatSessionID(data)
}

// formatSessionID formats a 16-byte id as a UUID and anything else as hex.
func formatSessionID(b []byte) string {
	if len(b) == 16 {
		return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
	return fmt.Sprintf("%x", b)
}
