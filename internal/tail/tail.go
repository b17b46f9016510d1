package tail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// ErrBadOptions marks options a person got wrong; the message says how to
// fix them.
var ErrBadOptions = errors.New("bad tail options")

// Options say what to follow and from where.
type Options struct {
	Stream string
	Prefix string
	// Subject is a NATS subject pattern under Prefix (`*` one token, `>`
	// the rest); empty: every event subject.
	Subject string
	// Memory keeps only the events of one memory (its memory_id); empty:
	// all.
	Memory string
	// Since starts that long ago; FromSeq at that stream sequence. Neither:
	// only events from now on.
	Since   time.Duration
	FromSeq uint64
	// JSON prints each message's body (the JSON envelope) on one line
	// instead of a person-readable line.
	JSON bool
	// now is time.Now unless a test sets it.
	now func() time.Time
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadOptions, fmt.Sprintf(format, args...))
}

// Normalize checks the options and returns them ready to use: the memory id
// in its canonical lowercase spelling.
func (o Options) Normalize() (Options, error) {
	if o.Subject != "" {
		if err := checkPattern(o.Subject, o.Prefix); err != nil {
			return o, err
		}
	}
	if o.Memory != "" {
		u, err := uuid.Parse(o.Memory)
		if err != nil || len(o.Memory) != 36 {
			return o, bad("--memory %q is not a UUID (like 0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c)", o.Memory)
		}
		o.Memory = u.String()
	}
	if o.Since < 0 {
		return o, bad("--since %s is negative: give how far back to start, e.g. --since 15m", o.Since)
	}
	if o.Since > 0 && o.FromSeq > 0 {
		return o, bad("--since and --from-seq both say where to start: give one of them")
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

// checkPattern accepts a NATS subject pattern under prefix that the stream
// can hold.
func checkPattern(p, prefix string) error {
	if strings.ContainsAny(p, " \t\r\n") {
		return bad("--subject %q contains white space", p)
	}
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return bad("--subject %q has an empty token (two dots, or a dot at an end)", p)
		case t == ">" && i != len(toks)-1:
			return bad("--subject %q: '>' must be the last token", p)
		case t != ">" && t != "*" && strings.ContainsAny(t, "*>"):
			return bad("--subject %q: '*' and '>' must be whole tokens", p)
		}
	}
	if toks[0] != prefix {
		return bad("--subject %q is not under the subject prefix %q: write it in full, e.g. %s.memory.image.> or %s.edge.*.created", p, prefix, prefix, prefix)
	}
	for _, s := range natssink.Subjects(prefix) {
		if natssink.SubjectsCollide(p, s) {
			return nil
		}
	}
	return bad("--subject %q matches nothing the stream holds (%s)", p, strings.Join(natssink.Subjects(prefix), " "))
}

// consumerConfig is the ordered consumer for o.
func (o Options) consumerConfig() jetstream.OrderedConsumerConfig {
	c := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if o.Subject != "" {
		c.FilterSubjects = []string{o.Subject}
	}
	switch {
	case o.FromSeq > 0:
		c.DeliverPolicy, c.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.FromSeq
	case o.Since > 0:
		start := o.now().Add(-o.Since)
		c.DeliverPolicy, c.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	return c
}

// Run follows the stream and writes one line per event to w until ctx ends
// (then it returns nil).
func Run(ctx context.Context, js jetstream.JetStream, o Options, w io.Writer) error {
	o, err := o.Normalize()
	if err != nil {
		return err
	}
	st, err := js.Stream(ctx, o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s does not exist: `edgesync run` creates it on its first start, or set EDGESYNC_STREAM to the stream it uses", o.Stream)
	}
	if err != nil {
		return orCanceled(ctx, fmt.Errorf("read stream %s: %w", o.Stream, err))
	}
	cons, err := st.OrderedConsumer(ctx, o.consumerConfig())
	if err != nil {
		return orCanceled(ctx, fmt.Errorf("follow stream %s: %w", o.Stream, err))
	}
	it, err := cons.Messages()
	if err != nil {
		return orCanceled(ctx, fmt.Errorf("follow stream %s: %w", o.Stream, err))
	}
	defer it.Stop()
	bw := bufio.NewWriter(w)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return bw.Flush()
			}
			return fmt.Errorf("follow stream %s: %w", o.Stream, err)
		}
		if line, ok := o.format(m); ok {
			bw.WriteString(line)
			bw.WriteByte('\n')
		}
		// Flush when caught up, so a burst is written in one go and a
		// quiet stream shows every line at once.
		if meta, err := m.Metadata(); err != nil || meta.NumPending == 0 {
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
	}
}

// orCanceled turns an error caused by the end of ctx into nil: an interrupt
// while connecting is no failure.
func orCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// body is what the line needs of any edgesync event (fields of every
// family; absent ones stay empty).
type body struct {
	ID         string  `json:"id"`
	Op         string  `json:"op"`
	MemoryID   *string `json:"memory_id"`
	MemoryType string  `json:"memory_type"`
	Backend    string  `json:"backend"`
	Artifact   string  `json:"artifact"`
	After      struct {
		SyncState string `json:"sync_state"`
		Present   *bool  `json:"present"`
	} `json:"after"`
	// gallery.status
	GalleryID      string  `json:"gallery_id"`
	OldStatus      *string `json:"old_status"`
	NewStatus      string  `json:"new_status"`
	Total          int64   `json:"total_memories"`
	ICPComplete    int64   `json:"icp_complete_memories"`
	BytesDone      int64   `json:"bytes_done"`
	BytesTotal     int64   `json:"bytes_total"`
	Slot           string  `json:"slot"`
	LastConfirmed  string  `json:"last_confirmed_lsn"`
	RunID          string  `json:"run_id"`
	Trigger        string  `json:"trigger"`
	State          string  `json:"state"`
	DryRun         bool    `json:"dry_run"`
	Report         *report `json:"report"`
	ReconcileError string  `json:"error"`
}

type report struct {
	Orphans       int64 `json:"orphans"`
	Missing       int64 `json:"missing"`
	Drift         int64 `json:"drift"`
	Stuck         int64 `json:"stuck"`
	FailedRetried int64 `json:"failed_retried"`
	ICPDrift      int64 `json:"icp_drift"`
	Fixed         int64 `json:"fixed"`
	DurationMS    int64 `json:"duration_ms"`
}

// format renders one message, or reports it filtered out.
func (o Options) format(m jetstream.Msg) (string, bool) {
	data := m.Data()
	var b body
	parsed := json.Unmarshal(data, &b) == nil
	if o.Memory != "" {
		if !parsed || b.MemoryID == nil || *b.MemoryID != o.Memory {
			return "", false
		}
	}
	if o.JSON {
		var buf bytes.Buffer
		if json.Compact(&buf, data) != nil {
			q, _ := json.Marshal(string(data)) // not JSON: still one line, still JSON
			return string(q), true
		}
		return buf.String(), true
	}
	var ts time.Time
	var seq uint64
	if meta, err := m.Metadata(); err == nil {
		ts, seq = meta.Timestamp, meta.Sequence.Stream
	}
	rel := strings.TrimPrefix(m.Subject(), o.Prefix+".")
	head := fmt.Sprintf("%s #%d %s", ts.UTC().Format("2006-01-02T15:04:05.000Z"), seq, rel)
	if !parsed {
		return fmt.Sprintf("%s (%d bytes, not JSON)", head, len(data)), true
	}
	return head + " " + describe(rel, b), true
}

// describe is the part of a line after the subject, by event family.
func describe(rel string, b body) string {
	mem := "-"
	if b.MemoryID != nil {
		mem = *b.MemoryID
	}
	family, _, _ := strings.Cut(rel, ".")
	switch {
	case family == "memory":
		return fmt.Sprintf("op=%s memory=%s type=%s id=%s", b.Op, mem, b.MemoryType, b.ID)
	case family == "edge":
		s := fmt.Sprintf("op=%s memory=%s type=%s edge=%s@%s", b.Op, mem, b.MemoryType, b.Artifact, b.Backend)
		if b.After.Present != nil {
			s += fmt.Sprintf(" present=%t", *b.After.Present)
		}
		if b.After.SyncState != "" {
			s += " sync=" + b.After.SyncState
		}
		return s + " id=" + b.ID
	case rel == "gallery.status":
		old := "none"
		if b.OldStatus != nil {
			old = *b.OldStatus
		}
		return fmt.Sprintf("gallery=%s %s -> %s (%d of %d memories on ICP)", b.GalleryID, old, b.NewStatus, b.ICPComplete, b.Total)
	case rel == "sync.progress":
		pct := 100.0
		if b.BytesTotal > 0 {
			pct = 100 * float64(b.BytesDone) / float64(b.BytesTotal)
		}
		return fmt.Sprintf("memory=%s type=%s %d/%d bytes (%.0f%%)", mem, b.MemoryType, b.BytesDone, b.BytesTotal, pct)
	case rel == "sync.slot_lost":
		return fmt.Sprintf("slot=%s last_confirmed=%s: the slot was re-created; a new snapshot and a reconcile recover what changed meanwhile", b.Slot, b.LastConfirmed)
	case family == "reconcile":
		s := fmt.Sprintf("run=%s trigger=%s state=%s dry_run=%t", b.RunID, b.Trigger, b.State, b.DryRun)
		if r := b.Report; r != nil {
			s += fmt.Sprintf(" orphans=%d missing=%d drift=%d stuck=%d failed_retried=%d icp_drift=%d fixed=%d duration_ms=%d",
				r.Orphans, r.Missing, r.Drift, r.Stuck, r.FailedRetried, r.ICPDrift, r.Fixed, r.DurationMS)
		}
		if b.ReconcileError != "" {
			s += fmt.Sprintf(" error=%q", b.ReconcileError)
		}
		return s
	}
	if b.MemoryID != nil {
		return "memory=" + mem
	}
	return ""
}
