package doctor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/config"
	natssink "github.com/edgesync/edgesync/sinks/nats"
)

// checkStream reports the stream as it is (never changing it): missing, or
// what in it the daemon refuses (fail) or advises against (warn).
func checkStream(ctx context.Context, js jetstream.JetStream, cfg config.Config) Result {
	const name = "stream"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		ours := natssink.Subjects(cfg.SubjectPrefix)
		for info := range js.ListStreams(ctx).Info() {
			for _, theirs := range info.Config.Subjects {
				for _, sub := range ours {
					if natssink.SubjectsCollide(theirs, sub) {
						return fail(name, fmt.Sprintf("stream %s does not exist, and stream %s already captures %s, so it cannot be created", cfg.Stream, info.Config.Name, theirs),
							fmt.Sprintf("set EDGESYNC_STREAM=%s to use that stream, or remove the subject from it", info.Config.Name))
					}
				}
			}
		}
		planned := fmt.Sprintf("stream %s does not exist; `run` creates it (file storage, R%d, max %s)", cfg.Stream, cfg.StreamReplicas, bytesText(cfg.StreamMaxBytes))
		if cfg.StreamReplicas < 3 || cfg.StreamMaxBytes <= 0 {
			return warn(name, planned, "on a production JetStream cluster set EDGESYNC_STREAM_REPLICAS=3 and EDGESYNC_STREAM_MAX_BYTES, or create the stream yourself (deploy.md)")
		}
		return pass(name, "%s", planned)
	}
	if err != nil {
		return fail(name, fmt.Sprintf("cannot read stream %s: %s", cfg.Stream, oneLine(err)), "allow the NATS user the JetStream API ($JS.API.>) and check that JetStream is enabled")
	}
	c := s.CachedInfo().Config
	summary := fmt.Sprintf("%s: %s storage, R%d, max %s, duplicate window %s, subjects %s", c.Name, c.Storage, c.Replicas, bytesText(c.MaxBytes), c.Duplicates, strings.Join(c.Subjects, " "))
	var warns []string
	for _, f := range natssink.CheckStream(c, cfg.SubjectPrefix) {
		if f.Fatal {
			return fail(name, summary+"; "+f.Msg, "`edgesync run` refuses this stream until it is changed as said")
		}
		warns = append(warns, f.Msg)
	}
	if missing := natssink.MissingSubjects(c.Subjects, cfg.SubjectPrefix); len(missing) > 0 {
		warns = append(warns, fmt.Sprintf("it lacks %s, which `run` adds", strings.Join(missing, ", ")))
	}
	if len(warns) > 0 {
		return warn(name, summary, strings.Join(warns, "; "))
	}
	return pass(name, "%s", summary)
}

func bytesText(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	const gib, mib = 1 << 30, 1 << 20
	if n%gib == 0 {
		return fmt.Sprintf("%d GiB", n/gib)
	}
	if n > gib {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	if n%mib == 0 {
		return fmt.Sprintf("%d MiB", n/mib)
	}
	return fmt.Sprintf("%d bytes", n)
}

// checkPermissions tries, without storing anything, what the daemon does on
// NATS: use the JetStream API (request-reply through _INBOX.>), publish each
// kind of event, subscribe to the admin subject and answer on _INBOX.>. The
// server reports a denied publish or subscription asynchronously; a flush
// makes it arrive before the verdict.
func (e *env) checkPermissions(ctx context.Context) Result {
	const name = "nats_permissions"
	const fix = "grant the NATS user publish on %s, %s.> and _INBOX.> and subscribe on %s.admin.> and _INBOX.> (deploy.md has the user's permissions block)"
	prefix := e.cfg.SubjectPrefix
	fixText := fmt.Sprintf(fix, "$JS.API.>", prefix, prefix)
	var denied []string
	collect := func() {
		_ = e.nc.FlushTimeout(5 * time.Second)
		for {
			select {
			case err := <-e.natsErrs:
				if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					denied = append(denied, strings.TrimPrefix(oneLine(err), "nats: "))
				}
			default:
				return
			}
		}
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := e.js.AccountInfo(actx)
	cancel()
	collect()
	if err != nil && len(denied) == 0 {
		return fail(name, "the JetStream API does not answer: "+oneLine(err), fixText)
	}

	_, streamErr := e.js.Stream(ctx, e.cfg.Stream)
	for _, kind := range []string{"memory", "edge", "gallery", "sync", "reconcile"} {
		subject := prefix + "." + kind + ".doctor"
		if streamErr == nil {
			// An impossible expected sequence makes the stream refuse the
			// message: nothing is stored, but the publish was allowed.
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = e.js.Publish(pctx, subject, nil, jetstream.WithExpectLastSequence(math.MaxUint64))
			cancel()
		} else {
			_ = e.nc.Publish(subject, nil) // no stream captures it (checkStream says so)
		}
	}
	sub, err := e.nc.SubscribeSync(natssink.AdminSubject(prefix))
	if err == nil {
		collect()
		_ = sub.Unsubscribe()
	}
	_ = e.nc.Publish("_INBOX.edgesync-doctor", nil) // as a reply to an admin request
	collect()
	if len(denied) > 0 {
		return fail(name, strings.Join(dedupe(denied), "; "), fixText)
	}
	return pass(name, "JetStream API, publish on %s.{memory,edge,gallery,sync,reconcile}.>, subscribe %s and replies on _INBOX.> allowed", prefix, natssink.AdminSubject(prefix))
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
