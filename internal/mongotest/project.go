package mongotest

import (
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// projection is a parsed find or $project projection: inclusion or
// exclusion of dotted paths, and, in an inclusion projection, computed
// fields (aggregation expressions). _id is included unless excluded.
type projection struct {
	root      *projNode
	inclusion bool
	idOff     bool
	empty     bool
}

// projNode is one level of a projection tree.
type projNode struct {
	keys     []string
	children map[string]*projNode
	leaf     bool           // include (inclusion) or exclude (exclusion) the whole field
	expr     *bson.RawValue // a computed field
}

func newProjNode() *projNode { return &projNode{children: map[string]*projNode{}} }

// Projection errors, as mongod reports them.
const (
	codePathCollision      = 31250
	codeExclusionInInclude = 31254
	codeInclusionInExclude = 31253
)

// parseProjection checks spec and returns its projection. Operators that
// only find supports ($slice, $elemMatch, $meta, the positional $) fail
// with a clear error rather than being ignored.
func parseProjection(spec bson.Raw) (*projection, *cmdError) {
	p := &projection{root: newProjNode()}
	fs := fieldsOf(spec)
	if len(fs) == 0 {
		p.empty = true
		return p, nil
	}
	decided := false
	var walk func(prefix string, fs []field) *cmdError
	walk = func(prefix string, fs []field) *cmdError {
		for _, f := range fs {
			path := prefix + f.key
			if strings.Contains(f.key, "$") {
				return errorf(codeBadValue, "mongotest does not support the positional projection operator in '%s'", path)
			}
			var kind int // 1 include, 0 exclude, 2 computed
			switch {
			case f.val.Type == bson.TypeBoolean:
				kind = map[bool]int{true: 1, false: 0}[f.val.Boolean()]
			case isNumber(f.val):
				kind = map[bool]int{true: 1, false: 0}[asFloat(f.val) != 0]
			case f.val.Type == bson.TypeEmbeddedDocument:
				if sub, isOps := isOperatorDoc(f.val); isOps {
					switch op := fieldsOf(sub)[0].key; op {
					case "$slice", "$elemMatch", "$meta":
						return errorf(codeBadValue, "mongotest does not support the projection operator %s (in '%s')", op, path)
					}
					kind = 2
				} else {
					if err := walk(path+".", fieldsOf(f.val.Document())); err != nil {
						return err
					}
					continue
				}
			default:
				kind = 2
			}
			if path == "_id" && kind != 2 {
				p.idOff = kind == 0
				if kind == 0 {
					// Dropped by an exclusion projection; an inclusion
					// one tests idOff.
					if err := p.addLeaf(path, nil); err != nil {
						return err
					}
				}
				continue
			}
			inclusion := kind != 0
			if !decided {
				p.inclusion, decided = inclusion, true
			} else if inclusion != p.inclusion {
				if p.inclusion {
					return errorf(codeExclusionInInclude, "Invalid $project :: caused by :: Cannot do exclusion on field %s in inclusion projection", path)
				}
				return errorf(codeInclusionInExclude, "Invalid $project :: caused by :: Cannot do inclusion on field %s in exclusion projection", path)
			}
			var expr *bson.RawValue
			if kind == 2 {
				v := f.val
				expr = &v
			}
			if err := p.addLeaf(path, expr); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("", fs); err != nil {
		return nil, err
	}
	if !decided {
		// Only _id was given: {_id: 0} excludes it, {_id: 1} keeps only
		// it.
		p.inclusion = !p.idOff
	}
	if p.inclusion {
		delete(p.root.children, "_id")
		p.root.keys = removeKey(p.root.keys, "_id")
	}
	return p, nil
}

func removeKey(keys []string, k string) []string {
	out := keys[:0:0]
	for _, x := range keys {
		if x != k {
			out = append(out, x)
		}
	}
	return out
}

// addLeaf adds path to the tree; a path that is a prefix of another, or
// has one as a prefix, collides as in mongod.
func (p *projection) addLeaf(path string, expr *bson.RawValue) *cmdError {
	parts := strings.Split(path, ".")
	n := p.root
	for i, part := range parts {
		if part == "" {
			return errorf(codeEmptyFieldName, "FieldPath field names may not be empty strings.")
		}
		c := n.children[part]
		last := i == len(parts)-1
		if c == nil {
			c = newProjNode()
			n.children[part] = c
			n.keys = append(n.keys, part)
		} else if c.leaf || last {
			if path == "_id" {
				return nil
			}
			return errorf(codePathCollision, "Path collision at %s", path)
		}
		if last {
			c.leaf, c.expr = true, expr
		}
		n = c
	}
	return nil
}

// apply returns doc projected.
func (p *projection) apply(doc bson.Raw) (bson.Raw, *cmdError) {
	if p.empty {
		return doc, nil
	}
	if !p.inclusion {
		return excludeDoc(doc, p.root), nil
	}
	var out []field
	if !p.idOff {
		if id, err := doc.LookupErr("_id"); err == nil {
			out = append(out, field{key: "_id", val: id})
		}
	}
	rest, err := includeDoc(doc, doc, p.root, true)
	if err != nil {
		return nil, err
	}
	return buildDoc(append(out, fieldsOf(rest)...)), nil
}

// includeDoc keeps the fields of d that n names, in d's order, then adds
// n's computed fields that d lacks, in the projection's order.
func includeDoc(root, d bson.Raw, n *projNode, top bool) (bson.Raw, *cmdError) {
	var out []field
	have := map[string]bool{}
	for _, f := range fieldsOf(d) {
		if top && f.key == "_id" {
			continue
		}
		c := n.children[f.key]
		if c == nil {
			continue
		}
		have[f.key] = true
		if c.expr != nil {
			v, found, err := evalExpr(root, *c.expr)
			if err != nil {
				return nil, err
			}
			if found {
				out = append(out, field{key: f.key, val: v})
			}
			continue
		}
		if c.leaf {
			out = append(out, f)
			continue
		}
		switch f.val.Type {
		case bson.TypeEmbeddedDocument:
			sub, err := includeDoc(root, f.val.Document(), c, false)
			if err != nil {
				return nil, err
			}
			out = append(out, field{key: f.key, val: docValue(sub)})
		case bson.TypeArray:
			var elems []bson.RawValue
			for _, e := range arrayValues(f.val) {
				if ed, ok := e.DocumentOK(); ok {
					sub, err := includeDoc(root, ed, c, false)
					if err != nil {
						return nil, err
					}
					elems = append(elems, docValue(sub))
				}
			}
			out = append(out, field{key: f.key, val: buildArray(elems)})
		}
	}
	for _, k := range n.keys {
		c := n.children[k]
		if have[k] || (top && k == "_id") {
			continue
		}
		if c.expr != nil {
			v, found, err := evalExpr(root, *c.expr)
			if err != nil {
				return nil, err
			}
			if found {
				out = append(out, field{key: k, val: v})
			}
		} else if !c.leaf && hasExpr(c) {
			sub, err := includeDoc(root, buildDoc(nil), c, false)
			if err != nil {
				return nil, err
			}
			out = append(out, field{key: k, val: docValue(sub)})
		}
	}
	return buildDoc(out), nil
}

func hasExpr(n *projNode) bool {
	if n.expr != nil {
		return true
	}
	for _, c := range n.children {
		if hasExpr(c) {
			return true
		}
	}
	return false
}

// excludeDoc drops the fields of d that n names.
func excludeDoc(d bson.Raw, n *projNode) bson.Raw {
	var out []field
	for _, f := range fieldsOf(d) {
		c := n.children[f.key]
		switch {
		case c == nil:
			out = append(out, f)
		case c.leaf:
		case f.val.Type == bson.TypeEmbeddedDocument:
			out = append(out, field{key: f.key, val: docValue(excludeDoc(f.val.Document(), c))})
		case f.val.Type == bson.TypeArray:
			vals := arrayValues(f.val)
			elems := make([]bson.RawValue, len(vals))
			for i, e := range vals {
				if ed, ok := e.DocumentOK(); ok {
					e = docValue(excludeDoc(ed, c))
				}
				elems[i] = e
			}
			out = append(out, field{key: f.key, val: buildArray(elems)})
		default:
			out = append(out, f)
		}
	}
	return buildDoc(out)
}
