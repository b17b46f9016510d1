package cdc

import (
	"encoding/json"
	"github.com/edgesync/edgesync/domain"
	"strconv"
	"time"
)

// Event is the JSON envelope of memory and edge messages (CONTRACT section 5,
// docs/events.schema.json). Producers use AppendEvent; Event is for consumers
// and tests.
type Event struct {
	ID             string          `json:"id"`
	Op             string          `json:"op"`
	MemoryID       *string         `json:"memory_id"`
	MemoryType     string          `json:"memory_type"`
	Backend        string          `json:"backend,omitempty"`
	Artifact       string          `json:"artifact,omitempty"`
	Source         Source          `json:"source"`
	Before         json.RawMessage `json:"before"`
	After          json.RawMessage `json:"after"`
	UnchangedToast []string        `json:"unchanged_toast,omitempty"`
	Oversized      []string        `json:"oversized_columns,omitempty"`
	EmittedAt      time.Time       `json:"emitted_at"`
}

// Source says where in the WAL a change came from.
type Source struct {
	Table      string    `json:"table"`
	LSN        string    `json:"lsn"`
	CommitLSN  string    `json:"commit_lsn"`
	Xid        uint32    `json:"xid"`
	CommitTime time.Time `json:"commit_time"`
}

// Op names in subjects and envelopes (the vocabulary's, named for events).
const (
	EventCreated   = domain.OpCreated
	EventUpdated   = domain.OpUpdated
	EventDeleted   = domain.OpDeleted
	EventTruncated = domain.OpTruncated
	EventSnapshot  = domain.OpSnapshot
)

// EventOp maps a change op to its event op.
func EventOp(op Op) string {
	switch op {
	case OpInsert:
		return EventCreated
	case OpUpdate:
		return EventUpdated
	case OpDelete:
		return EventDeleted
	}
	return EventTruncated
}

// MsgID is the message id of a change: <slot>/<commit LSN>/<index in
// transaction>, the same on every replay of the same WAL.
func MsgID(b []byte, slot string, commit LSN, index int) []byte {
	b = append(b, slot...)
	b = append(b, '/')
	b = AppendLSN(b, commit)
	b = append(b, '/')
	return strconv.AppendInt(b, int64(index), 10)
}

// EventHeader is what an envelope says besides the row images.
type EventHeader struct {
	ID         string
	Op         string
	MemoryID   string // empty: null (truncate)
	MemoryType string
	Backend    string // edge events only
	Artifact   string // edge events only
	Table      string
	LSN        LSN
	Txn        *Txn
	// MaxValue, when > 0, leaves out column values longer than this many
	// bytes (named in oversized_columns) so the message fits NATS' limit.
	MaxValue int
	// AfterJSON is the after image as ready JSON, for events without a
	// decoded row (the initial snapshot reads rows as JSON); used only when
	// AppendEvent gets no relation.
	AfterJSON []byte
}

// AppendEvent appends the JSON envelope of a change.
func AppendEvent(b []byte, h EventHeader, rel *Relation, before, after Row, now time.Time) []byte {
	b = append(b, `{"id":`...)
	b = AppendString(b, h.ID)
	b = append(b, `,"op":`...)
	b = AppendString(b, h.Op)
	b = append(b, `,"memory_id":`...)
	if h.MemoryID == "" {
		b = append(b, "null"...)
	} else {
		b = AppendString(b, h.MemoryID)
	}
	b = append(b, `,"memory_type":`...)
	b = AppendString(b, h.MemoryType)
	if h.Backend != "" {
		b = append(b, `,"backend":`...)
		b = AppendString(b, h.Backend)
		b = append(b, `,"artifact":`...)
		b = AppendString(b, h.Artifact)
	}
	b = append(b, `,"source":{"table":`...)
	b = AppendString(b, h.Table)
	b = append(b, `,"lsn":"`...)
	b = AppendLSN(b, h.LSN)
	b = append(b, `","commit_lsn":"`...)
	var xid uint32
	var ct time.Time
	if h.Txn != nil {
		b = AppendLSN(b, h.Txn.CommitLSN)
		xid, ct = h.Txn.Xid, h.Txn.CommitTime
	} else {
		b = AppendLSN(b, 0)
	}
	b = append(b, `","xid":`...)
	b = strconv.AppendUint(b, uint64(xid), 10)
	b = append(b, `,"commit_time":"`...)
	b = ct.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"},"before":`...)
	var oversized []string
	if rel != nil {
		b, oversized = AppendRowJSONLimit(b, rel, before, h.MaxValue, oversized)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"after":`...)
	if rel != nil {
		b, oversized = AppendRowJSONLimit(b, rel, after, h.MaxValue, oversized)
	} else if len(h.AfterJSON) > 0 {
		b = append(b, h.AfterJSON...)
	} else {
		b = append(b, "null"...)
	}
	if rel != nil && after != nil {
		if u := UnchangedColumns(rel, after); len(u) > 0 {
			b = append(b, `,"unchanged_toast":[`...)
			for i, c := range u {
				if i > 0 {
					b = append(b, ',')
				}
				b = AppendString(b, c)
			}
			b = append(b, ']')
		}
	}
	if len(oversized) > 0 {
		b = append(b, `,"oversized_columns":[`...)
		for i, c := range oversized {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, c)
		}
		b = append(b, ']')
	}
	b = append(b, `,"emitted_at":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// SlotLostEvent is the body of `<prefix>.sync.slot_lost`: the slot was found
// lost or invalidated and re-created; changes made while it was gone are
// recovered by a new snapshot and a reconcile run.
type SlotLostEvent struct {
	Event            string    `json:"event"` // "slot_lost"
	Slot             string    `json:"slot"`
	LastConfirmedLSN string    `json:"last_confirmed_lsn"`
	DetectedAt       time.Time `json:"detected_at"`
}

// ProgressEvent is the body of `<prefix>.sync.progress` (and the SSE
// `progress` event): the bytes of one ICP upload the canister holds.
type ProgressEvent struct {
	MemoryID   string    `json:"memory_id"`
	MemoryType string    `json:"memory_type"`
	BytesDone  int64     `json:"bytes_done"`
	BytesTotal int64     `json:"bytes_total"`
	At         time.Time `json:"at"`
}
