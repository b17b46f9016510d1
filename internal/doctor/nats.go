package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// checkPermissions checks, without publishing anything a subscriber could
// see, what the daemon does on NATS: the JetStream API by request-reply
// (which needs subscribe on _INBOX.>), a subscription on the admin subject,
// replies on _INBOX.>, and, from the user's own permissions as the server
// reports them ($SYS.REQ.USER.INFO), publish on every event subject. The
// server reports a denied publish or subscription asynchronously; a flush
// makes it arrive before the verdict.
func (e *env) checkPermissions(ctx context.Context) Result {
	const name = "nats_permissions"
	prefix := e.cfg.SubjectPrefix
	fix := fmt.Sprintf("grant the NATS user publish on %s.>, $JS.API.>, _INBOX.> and $SYS.REQ.USER.INFO and subscribe on %s.admin.> and _INBOX.> (deploy.md, step 3)", prefix, prefix)
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
		return fail(name, "the JetStream API does not answer: "+oneLine(err), fix)
	}
	if sub, err := e.nc.SubscribeSync(natssink.AdminSubject(prefix)); err == nil {
		collect()
		_ = sub.Unsubscribe()
	}
	_ = e.nc.Publish(e.nc.NewRespInbox(), nil) // as a reply to an admin request; nobody listens there
	collect()

	perms, known := e.userPermissions(ctx)
	collect() // a denied USER.INFO request is no finding of its own
	denied = dedupe(withoutUserInfo(denied))
	if known {
		for _, subject := range append(natssink.Subjects(prefix), "$JS.API.STREAM.INFO."+e.cfg.Stream, "$JS.API.STREAM.CREATE."+e.cfg.Stream) {
			if !perms.Publish.allows(subject) {
				denied = append(denied, "publish to "+subject+" is not allowed")
			}
		}
	}
	if len(denied) > 0 {
		return fail(name, strings.Join(denied, "; "), fix)
	}
	if !known {
		return warn(name, fmt.Sprintf("JetStream API, subscribe %s and replies on _INBOX.> allowed; publish on the event subjects not verified", natssink.AdminSubject(prefix)),
			"allow the user to publish on $SYS.REQ.USER.INFO so doctor can read its permissions")
	}
	return pass(name, "JetStream API, publish on %s.{memory,edge,gallery,sync,reconcile}.>, subscribe %s and replies on _INBOX.> allowed", prefix, natssink.AdminSubject(prefix))
}

const userInfoSubject = "$SYS.REQ.USER.INFO"

func withoutUserInfo(errs []string) []string {
	var out []string
	for _, e := range errs {
		if !strings.Contains(e, userInfoSubject) {
			out = append(out, e)
		}
	}
	return out
}

// subjectPermission is one direction of a NATS user's permissions; nil
// allows everything.
type subjectPermission struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// allows reports whether every subject that subject matches may be used.
func (p *subjectPermission) allows(subject string) bool {
	if p == nil {
		return true
	}
	for _, d := range p.Deny {
		if natssink.SubjectsCollide(d, subject) {
			return false
		}
	}
	if len(p.Allow) == 0 {
		return true
	}
	for _, a := range p.Allow {
		if natssink.SubjectCovers(a, subject) {
			return true
		}
	}
	return false
}

type userPermissions struct {
	Publish   *subjectPermission `json:"publish"`
	Subscribe *subjectPermission `json:"subscribe"`
}

// userPermissions asks the server for this connection's permissions;
// known is false when the server does not say (no system account, or the
// user may not ask).
func (e *env) userPermissions(ctx context.Context) (p userPermissions, known bool) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	msg, err := e.nc.RequestWithContext(rctx, userInfoSubject, nil)
	if err != nil {
		return p, false
	}
	var resp struct {
		Data *struct {
			Permissions *userPermissions `json:"permissions"`
		} `json:"data"`
		Error *struct{} `json:"error"`
	}
	if json.Unmarshal(msg.Data, &resp) != nil || resp.Error != nil || resp.Data == nil {
		return p, false
	}
	if resp.Data.Permissions != nil {
		p = *resp.Data.Permissions
	}
	return p, true
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
