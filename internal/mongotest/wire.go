package mongotest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Wire protocol op codes.
const (
	opReply = 1
	opQuery = 2004
	opMsg   = 2013
)

// OP_MSG flag bits.
const (
	msgChecksumPresent = 1 << 0
	msgMoreToCome      = 1 << 1
)

const headerLen = 16

// Limits advertised in the hello reply and enforced on incoming messages.
const (
	maxBSONObjectSize   = 16 * 1024 * 1024
	maxMessageSizeBytes = 48000000
	maxWriteBatchSize   = 100000
)

// header is a wire protocol message header.
type header struct {
	length     int32
	requestID  int32
	responseTo int32
	opCode     int32
}

// readMessage reads one wire message from r and returns its header and the
// bytes after the header. It fails on a short read or a message larger than
// maxMessageSizeBytes.
func readMessage(r io.Reader) (header, []byte, error) {
	var hb [headerLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return header{}, nil, fmt.Errorf("read header: %w", err)
	}
	h := header{
		length:     int32(binary.LittleEndian.Uint32(hb[0:])),
		requestID:  int32(binary.LittleEndian.Uint32(hb[4:])),
		responseTo: int32(binary.LittleEndian.Uint32(hb[8:])),
		opCode:     int32(binary.LittleEndian.Uint32(hb[12:])),
	}
	if h.length < headerLen || h.length > maxMessageSizeBytes {
		return h, nil, fmt.Errorf("message length %d out of range", h.length)
	}
	body := make([]byte, h.length-headerLen)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, nil, fmt.Errorf("read body: %w", err)
	}
	return h, body, nil
}

// parseOpMsg decodes an OP_MSG body into its flags and a single command
// document in which each document sequence (kind 1 section) is folded in as
// an array field named by the sequence's identifier.
func parseOpMsg(body []byte) (uint32, bson.Raw, error) {
	if len(body) < 5 {
		return 0, nil, errors.New("OP_MSG too short")
	}
	flags := binary.LittleEndian.Uint32(body)
	rest := body[4:]
	if flags&msgChecksumPresent != 0 {
		if len(rest) < 4 {
			return 0, nil, errors.New("OP_MSG checksum missing")
		}
		rest = rest[:len(rest)-4]
	}
	var main bson.Raw
	type sequence struct {
		id   string
		docs []bson.Raw
	}
	var seqs []sequence
	for len(rest) > 0 {
		kind := rest[0]
		rest = rest[1:]
		switch kind {
		case 0:
			doc, r, ok := bsoncore.ReadDocument(rest)
			if !ok {
				return 0, nil, errors.New("OP_MSG: malformed body section")
			}
			if main != nil {
				return 0, nil, errors.New("OP_MSG: more than one body section")
			}
			main = bson.Raw(doc)
			rest = r
		case 1:
			if len(rest) < 4 {
				return 0, nil, errors.New("OP_MSG: malformed document sequence")
			}
			size := int(int32(binary.LittleEndian.Uint32(rest)))
			if size < 5 || size > len(rest) {
				return 0, nil, errors.New("OP_MSG: document sequence size out of range")
			}
			sec := rest[4:size]
			rest = rest[size:]
			i := bytes.IndexByte(sec, 0)
			if i < 0 {
				return 0, nil, errors.New("OP_MSG: document sequence identifier not terminated")
			}
			s := sequence{id: string(sec[:i])}
			sec = sec[i+1:]
			for len(sec) > 0 {
				doc, r, ok := bsoncore.ReadDocument(sec)
				if !ok {
					return 0, nil, errors.New("OP_MSG: malformed document in sequence")
				}
				s.docs = append(s.docs, bson.Raw(doc))
				sec = r
			}
			seqs = append(seqs, s)
		default:
			return 0, nil, fmt.Errorf("OP_MSG: unknown section kind %d", kind)
		}
	}
	if main == nil {
		return 0, nil, errors.New("OP_MSG: no body section")
	}
	if err := main.Validate(); err != nil {
		return 0, nil, fmt.Errorf("OP_MSG: invalid body: %w", err)
	}
	if len(seqs) == 0 {
		return flags, main, nil
	}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	elems, err := main.Elements()
	if err != nil {
		return 0, nil, fmt.Errorf("OP_MSG: invalid body: %w", err)
	}
	for _, e := range elems {
		for _, s := range seqs {
			if e.Key() == s.id {
				return 0, nil, fmt.Errorf("OP_MSG: field %q given both in the body and as a document sequence", s.id)
			}
		}
		dst = append(dst, e...)
	}
	for _, s := range seqs {
		for _, d := range s.docs {
			if err := d.Validate(); err != nil {
				return 0, nil, fmt.Errorf("OP_MSG: invalid document in sequence %q: %w", s.id, err)
			}
		}
		dst = appendDocArray(dst, s.id, s.docs)
	}
	dst, err = bsoncore.AppendDocumentEnd(dst, idx)
	if err != nil {
		return 0, nil, fmt.Errorf("OP_MSG: %w", err)
	}
	return flags, bson.Raw(dst), nil
}

// appendDocArray appends an array element named key holding docs.
func appendDocArray(dst []byte, key string, docs []bson.Raw) []byte {
	aidx, dst := bsoncore.AppendArrayElementStart(dst, key)
	for i, d := range docs {
		dst = bsoncore.AppendDocumentElement(dst, arrayKey(i), d)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	return dst
}

// parseOpQuery decodes an OP_QUERY body into the database of its $cmd
// namespace and the command document, unwrapping a {$query: ...} wrapper.
func parseOpQuery(body []byte) (db string, cmd bson.Raw, err error) {
	if len(body) < 4 {
		return "", nil, errors.New("OP_QUERY too short")
	}
	rest := body[4:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return "", nil, errors.New("OP_QUERY: namespace not terminated")
	}
	ns := string(rest[:i])
	rest = rest[i+1:]
	if len(rest) < 8 {
		return "", nil, errors.New("OP_QUERY too short")
	}
	rest = rest[8:]
	doc, _, ok := bsoncore.ReadDocument(rest)
	if !ok {
		return "", nil, errors.New("OP_QUERY: malformed query document")
	}
	cmd = bson.Raw(doc)
	if err := cmd.Validate(); err != nil {
		return "", nil, fmt.Errorf("OP_QUERY: invalid query document: %w", err)
	}
	if q, ok := cmd.Lookup("$query").DocumentOK(); ok {
		cmd = q
	}
	db, coll, found := cutLast(ns, ".")
	if !found || coll != "$cmd" {
		return "", nil, fmt.Errorf("OP_QUERY: namespace %q is not a command namespace", ns)
	}
	return db, cmd, nil
}

// cutLast splits s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// appendHeader appends a message header with a placeholder length.
func appendHeader(dst []byte, requestID, responseTo, opCode int32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(requestID))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(responseTo))
	return binary.LittleEndian.AppendUint32(dst, uint32(opCode))
}

// buildOpMsg returns an OP_MSG carrying doc as its only section.
func buildOpMsg(requestID, responseTo int32, doc bson.Raw) []byte {
	dst := appendHeader(make([]byte, 0, headerLen+5+len(doc)), requestID, responseTo, opMsg)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = append(dst, 0)
	dst = append(dst, doc...)
	binary.LittleEndian.PutUint32(dst, uint32(len(dst)))
	return dst
}

// buildOpReply returns an OP_REPLY carrying doc as its only document.
func buildOpReply(requestID, responseTo int32, doc bson.Raw) []byte {
	dst := appendHeader(make([]byte, 0, headerLen+20+len(doc)), requestID, responseTo, opReply)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // responseFlags
	dst = binary.LittleEndian.AppendUint64(dst, 0) // cursorID
	dst = binary.LittleEndian.AppendUint32(dst, 0) // startingFrom
	dst = binary.LittleEndian.AppendUint32(dst, 1) // numberReturned
	dst = append(dst, doc...)
	binary.LittleEndian.PutUint32(dst, uint32(len(dst)))
	return dst
}
