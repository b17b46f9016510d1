package cdc

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Op is the kind of a change.
type Op uint8

// The operations of a change.
const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
	OpTruncate
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Column of a relation.
type Column struct {
	Name string
	OID  uint32
	Key  bool // part of the replica identity
}

// Relation is a published table as pgoutput describes it.
type Relation struct {
	ID              uint32
	Schema          string
	Name            string
	ReplicaIdentity byte // 'd' default, 'f' full, 'i' index, 'n' nothing
	Columns         []Column
	index           map[string]int
}

func newRelation(m *pglogrepl.RelationMessage) *Relation {
	r := &Relation{ID: m.RelationID, Schema: m.Namespace, Name: m.RelationName, ReplicaIdentity: m.ReplicaIdentity, index: map[string]int{}}
	for i, c := range m.Columns {
		r.Columns = append(r.Columns, Column{Name: c.Name, OID: c.DataType, Key: c.Flags&1 == 1})
		r.index[c.Name] = i
	}
	return r
}

// NewRelation describes a table the way a Relation message would (for
// routers and tests that build changes without a server).
func NewRelation(id uint32, schema, name string, cols ...Column) *Relation {
	r := &Relation{ID: id, Schema: schema, Name: name, ReplicaIdentity: 'd', Columns: cols, index: map[string]int{}}
	for i, c := range cols {
		r.index[c.Name] = i
	}
	return r
}

// Qualified is schema.name.
func (r *Relation) Qualified() string { return r.Schema + "." + r.Name }

// Col returns the index of a column, or -1.
func (r *Relation) Col(name string) int {
	if i, ok := r.index[name]; ok {
		return i
	}
	return -1
}

// Value kinds, as pgoutput sends them.
const (
	Null      = 'n'
	Unchanged = 'u' // an unchanged TOASTed value: not sent, not null
	Text      = 't'
)

// Value is one column of a row image in pgoutput's text format.
type Value struct {
	Kind byte
	Data []byte
}

// Row is a row image; it may be shorter than the relation's columns.
type Row []Value

// Get returns the value of column i (Null when absent).
func (r Row) Get(i int) Value {
	if i < 0 || i >= len(r) {
		return Value{Kind: Null}
	}
	return r[i]
}

// Text returns the text of column i and whether it is a known, non-null value.
func (r Row) Text(i int) (string, bool) {
	v := r.Get(i)
	if v.Kind != Text {
		return "", false
	}
	return string(v.Data), true
}

func rowOf(t *pglogrepl.TupleData) Row {
	if t == nil {
		return nil
	}
	row := make(Row, len(t.Columns))
	for i, c := range t.Columns {
		k := c.DataType
		if k == pglogrepl.TupleDataTypeBinary {
			k = Text // not requested; treated as text defensively
		}
		row[i] = Value{Kind: k, Data: c.Data}
	}
	return row
}

// Txn is a committed transaction as it streams by. End is known at Commit.
type Txn struct {
	Xid        uint32
	CommitLSN  LSN // start of the commit record (BeginMessage.FinalLSN)
	End        LSN // end of the commit record (CommitMessage.TransactionEndLSN)
	CommitTime time.Time
	Origin     string // replication origin, if the writer set one
}

// Change is one row change (or a truncate of some relations).
type Change struct {
	Op  Op
	Rel *Relation
	// Old is the old row (key columns only unless REPLICA IDENTITY FULL);
	// nil when pgoutput sent none.
	Old Row
	New Row
	// LSN is the change's own record position (0 for some; not monotonic
	// across transactions: never use it to resume).
	LSN LSN
	// Index counts every change of the transaction from 0, before any
	// filtering, so it is stable across replays and config changes.
	Index int
	// Truncated lists the relations of a truncate.
	Truncated []*Relation
}

// MergeUnchanged fills unchanged TOAST values of New from Old when Old is a
// full old row, so a consumer never sees a value turned into null.
func (c *Change) MergeUnchanged() {
	if c.New == nil || c.Old == nil {
		return
	}
	// Only a value the old row really carries is copied: a key-only old
	// row has nulls in its other columns, which are not the old values.
	for i := range c.New {
		if c.New[i].Kind == Unchanged && i < len(c.Old) && c.Old[i].Kind == Text {
			c.New[i] = c.Old[i]
		}
	}
}
