package icpreplica

import (
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/leb128"
)

// outcome is how a call ended: a reply, or a reject.
type outcome struct {
	reply []byte
	rej   *reject
	at    time.Time
}

// tree is the request_status/<id> subtree of the outcome.
func (o *outcome) tree() tree {
	if o.rej != nil {
		return tree{
			"status":         []byte("rejected"),
			"reject_code":    leb128.AppendUnsignedUint64(nil, o.rej.code),
			"reject_message": []byte(o.rej.message),
			// agent-go's synchronous path needs error_code, or it reports a lookup error instead.
			"error_code": []byte(o.rej.errorCode),
		}
	}
	return tree{"status": []byte("replied"), "reply": o.reply}
}

// requestLog remembers call outcomes by request id until no envelope with that id can still be
// valid, so replays are answered without executing again and polls find the outcome.
type requestLog struct {
	mu    sync.Mutex
	byID  map[[32]byte]*outcome
	order [][32]byte // insertion order, for expiry
}

func newRequestLog() *requestLog {
	return &requestLog{byID: map[[32]byte]*outcome{}}
}

func (l *requestLog) get(id [32]byte) *outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

// put records the outcome of id, unless a concurrent replay recorded one first; it returns the
// recorded outcome either way.
func (l *requestLog) put(id [32]byte, reply []byte, rej *reject) *outcome {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.order) > 0 {
		old := l.byID[l.order[0]]
		if old != nil && now.Sub(old.at) < requestRetention {
			break
		}
		delete(l.byID, l.order[0])
		l.order = l.order[1:]
	}
	if out, found := l.byID[id]; found {
		return out
	}
	out := &outcome{reply: reply, rej: rej, at: now}
	l.byID[id] = out
	l.order = append(l.order, id)
	return out
}
