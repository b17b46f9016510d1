package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStreamUnusable marks a stream the daemon cannot work with: a person
// must change it (the message says how); retrying would not help.
var ErrStreamUnusable = errors.New("stream unusable")

// errCodeSubjectOverlap is JetStream's "subjects overlap with an existing stream".
const errCodeSubjectOverlap = 10065

// AdminSubject is the request-reply subject that no stream may capture: a
// stream that stores the requests would answer them itself (with a PubAck),
// and the requester would never see the run id.
func AdminSubject(prefix string) string { return prefix + ".admin.reconcile" }

// SubjectCovers reports whether every subject that sub matches is also
// matched by pattern (sub may hold wildcards): `edgesync.>` covers
// `edgesync.memory.>`, `a.*.c` covers `a.b.c` but not `a.>`.
func SubjectCovers(pattern, sub string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, pt := range p {
		if pt == ">" {
			return len(s) > i // '>' needs at least one token
		}
		if i >= len(s) {
			return false
		}
		switch {
		case s[i] == ">":
			return false // sub matches more tokens than pt can
		case pt == "*":
		case pt != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// SubjectsCollide reports whether some subject matches both a and b.
func SubjectsCollide(a, b string) bool {
	x, y := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] == ">" || y[i] == ">" {
			return true
		}
		if x[i] != "*" && y[i] != "*" && x[i] != y[i] {
			return false
		}
	}
	return len(x) == len(y)
}

// MissingSubjects returns the subjects of prefix that none of have covers.
func MissingSubjects(have []string, prefix string) []string {
	var out []string
	for _, want := range Subjects(prefix) {
		covered := false
		for _, h := range have {
			if SubjectCovers(h, want) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, want)
		}
	}
	return out
}

// StreamFinding is one thing wrong with a stream's configuration. Fatal
// ones make the daemon refuse the stream; the others are advice (doctor
// prints them as warnings).
type StreamFinding struct {
	Fatal bool
	Msg   string
}

// CheckStream inspects a stream's configuration against what the daemon
// needs for prefix. Missing subjects are not reported: EnsureStream adds
// them (see MissingSubjects).
func CheckStream(cfg jetstream.StreamConfig, prefix string) []StreamFinding {
	var out []StreamFinding
	fatal := func(format string, args ...any) {
		out = append(out, StreamFinding{Fatal: true, Msg: fmt.Sprintf(format, args...)})
	}
	warn := func(format string, args ...any) {
		out = append(out, StreamFinding{Msg: fmt.Sprintf(format, args...)})
	}
	name := cfg.Name
	admin := AdminSubject(prefix)
	for _, s := range cfg.Subjects {
		if SubjectCovers(s, admin) {
			fatal("stream %s captures the request-reply subject %s through its subject %q: replace that subject with edgesync's own (nats stream edit %s --subjects %q), so admin requests are answered by edgesync and not stored",
				name, admin, s, name, strings.Join(Subjects(prefix), ","))
			break
		}
	}
	if cfg.Duplicates < 2*time.Minute {
		fatal("stream %s has a duplicate window of %s: set it to at least 2m (nats stream edit %s --dupe-window 10m), or replays after a crash may duplicate events", name, cfg.Duplicates, name)
	}
	if cfg.Storage != jetstream.FileStorage {
		fatal("stream %s keeps its messages in memory: events confirmed to Postgres would be lost when NATS restarts; re-create it with file storage (nats stream add %s --storage file ...)", name, name)
	}
	if cfg.Retention != jetstream.LimitsPolicy {
		fatal("stream %s has %s retention: consumers would delete events other consumers and replays need; re-create it with limits retention (nats stream add %s --retention limits ...)", name, cfg.Retention, name)
	}
	if cfg.NoAck {
		fatal("stream %s does not acknowledge publishes (no_ack): the daemon confirms the slot only past acknowledged events; re-create it without --no-ack", name)
	}
	if cfg.Sealed {
		fatal("stream %s is sealed and accepts no messages: use another stream (EDGESYNC_STREAM) or re-create it", name)
	}
	if cfg.Replicas < 3 {
		warn("stream %s has %d replica(s): one NATS node's loss loses events; on a JetStream cluster use 3 (nats stream edit %s --replicas 3)", name, max(cfg.Replicas, 1), name)
	}
	if !cfg.AllowMsgTTL {
		warn("stream %s does not allow per-message TTLs: upload progress is published with a Nats-TTL header (%s) and such a stream refuses it; `run` enables them when its user may update the stream, or run `nats stream edit %s --allow-msg-ttl`", name, ProgressTTL, name)
	}
	if cfg.MaxBytes <= 0 {
		warn("stream %s has no size limit: a consumer-less stream grows until the NATS volume is full; set one (nats stream edit %s --max-bytes 10GB)", name, name)
	}
	return out
}

// checkExisting turns the fatal findings of an existing stream into one error.
func checkExisting(cfg jetstream.StreamConfig, prefix string) error {
	for _, f := range CheckStream(cfg, prefix) {
		if f.Fatal {
			return fmt.Errorf("%w: %s", ErrStreamUnusable, f.Msg)
		}
	}
	return nil
}

// explainOverlap names the stream whose subjects keep ours from being
// created or added, and the ways out.
func explainOverlap(ctx context.Context, js jetstream.JetStream, name string, subjects []string, err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeSubjectOverlap {
		return err
	}
	lister := js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.Name == name {
			continue
		}
		for _, theirs := range info.Config.Subjects {
			for _, ours := range subjects {
				if SubjectsCollide(theirs, ours) {
					return fmt.Errorf("%w: stream %s cannot capture %s because stream %s already captures %s: set EDGESYNC_STREAM=%s to use that stream, or remove the subject from it",
						ErrStreamUnusable, name, ours, info.Config.Name, theirs, info.Config.Name)
				}
			}
		}
	}
	return fmt.Errorf("%w: stream %s: its subjects overlap another stream's (nats stream ls; remove the overlapping subject or set EDGESYNC_STREAM to that stream): %v", ErrStreamUnusable, name, err)
}
