package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/edgesync/edgesync/config"
	"github.com/edgesync/edgesync/domain"
)

// asyncAPI is docs/asyncapi.yaml as the tests read it: its channels with
// their address templates, parameter enums and messages, and a compiler
// for the schemas its messages name.
type asyncAPI struct {
	t        testing.TB
	doc      map[string]any
	channels []apiChannel
	compiler *jsonschema.Compiler
	compiled map[string]*jsonschema.Schema
}

type apiChannel struct {
	id       string
	address  string              // "" for a dynamic address (the reply inbox)
	params   map[string][]string // parameter → its enum (nil: any one token)
	messages []apiMessage
}

type apiMessage struct {
	name       string
	payloadRef string // a $ref relative to docs/
	headersRef string // "#/components/schemas/..." or ""
}

const docsBase = "https://github.com/edgesync/edgesync/docs/"

func loadAsyncAPI(t testing.TB) *asyncAPI {
	t.Helper()
	raw, err := os.ReadFile("../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	a := &asyncAPI{t: t, doc: jsonish(t, y).(map[string]any), compiled: map[string]*jsonschema.Schema{}}
	if v, _ := a.doc["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("asyncapi version %q, want 3.x", v)
	}
	info, _ := a.doc["info"].(map[string]any)
	if v, _ := info["version"].(string); v == "" || !strings.Contains(fmt.Sprint(info["description"]), "Versioning") {
		t.Fatalf("info must carry the contract version and its versioning rule: %v", info)
	}
	channels, _ := a.doc["channels"].(map[string]any)
	for id, c := range channels {
		cm := c.(map[string]any)
		ch := apiChannel{id: id, params: map[string][]string{}}
		if addr, ok := cm["address"].(string); ok {
			ch.address = addr
		}
		params, _ := cm["parameters"].(map[string]any)
		for name, p := range params {
			pm := a.deref(p)
			if enum, ok := pm["enum"].([]any); ok {
				for _, v := range enum {
					ch.params[name] = append(ch.params[name], v.(string))
				}
			} else {
				ch.params[name] = nil
			}
		}
		msgs, _ := cm["messages"].(map[string]any)
		for name, m := range msgs {
			mm := a.deref(m)
			am := apiMessage{name: name}
			if p, ok := mm["payload"].(map[string]any); ok {
				am.payloadRef, _ = p["$ref"].(string)
			}
			if h, ok := mm["headers"].(map[string]any); ok {
				am.headersRef, _ = h["$ref"].(string)
			}
			if am.payloadRef == "" {
				t.Fatalf("channel %s message %s: the payload must $ref events.schema.json", id, name)
			}
			ch.messages = append(ch.messages, am)
		}
		if len(ch.messages) != 1 {
			t.Fatalf("channel %s has %d messages; the tests expect one per channel", id, len(ch.messages))
		}
		a.channels = append(a.channels, ch)
	}
	sort.Slice(a.channels, func(i, j int) bool { return a.channels[i].id < a.channels[j].id })

	schemaFile, err := os.ReadFile("../docs/events.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaFile))
	if err != nil {
		t.Fatal(err)
	}
	a.compiler = jsonschema.NewCompiler()
	a.compiler.AssertFormat()
	if err := a.compiler.AddResource(docsBase+"events.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schemas, _ := a.doc["components"].(map[string]any)["schemas"].(map[string]any)
	for name, s := range schemas {
		if err := a.compiler.AddResource(docsBase+"asyncapi/"+name, s); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// jsonish turns YAML values into what JSON decoding gives (float64 numbers,
// map[string]any), which the schema compiler expects.
func jsonish(t testing.TB, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// deref follows a local $ref ("#/components/...").
func (a *asyncAPI) deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	ref, ok := m["$ref"].(string)
	if !ok {
		return m
	}
	if !strings.HasPrefix(ref, "#/") {
		a.t.Fatalf("non-local $ref %q where a local one is expected", ref)
	}
	var cur any = a.doc
	for _, tok := range strings.Split(ref[2:], "/") {
		cur = cur.(map[string]any)[tok]
	}
	if cur == nil {
		a.t.Fatalf("$ref %q points at nothing", ref)
	}
	return a.deref(cur)
}

// schema compiles what a payload or headers $ref names.
func (a *asyncAPI) schema(ref string) *jsonschema.Schema {
	a.t.Helper()
	url := docsBase + ref
	if strings.HasPrefix(ref, "#/components/schemas/") {
		url = docsBase + "asyncapi/" + strings.TrimPrefix(ref, "#/components/schemas/")
	}
	if s, ok := a.compiled[url]; ok {
		return s
	}
	s, err := a.compiler.Compile(url)
	if err != nil {
		a.t.Fatalf("compile %s: %v", ref, err)
	}
	a.compiled[url] = s
	return s
}

// documentedFields are the properties the schema a payload $ref names lists
// at its top level.
func documentedFields(t testing.TB, ref string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../docs/events.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var cur any
	if err := json.Unmarshal(raw, &cur); err != nil {
		t.Fatal(err)
	}
	if _, frag, ok := strings.Cut(ref, "#/"); ok {
		for _, tok := range strings.Split(frag, "/") {
			cur = cur.(map[string]any)[tok]
		}
	}
	out := map[string]bool{}
	var collect func(s map[string]any)
	collect = func(s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		for k := range props {
			out[k] = true
		}
		for _, kw := range []string{"oneOf", "anyOf", "allOf"} {
			branches, _ := s[kw].([]any)
			for _, b := range branches {
				if bm, ok := b.(map[string]any); ok {
					collect(bm)
				}
			}
		}
	}
	if s, ok := cur.(map[string]any); ok {
		collect(s)
	} else {
		t.Fatalf("%s names no schema object", ref)
	}
	return out
}

// subjects expands every channel address over its parameters' enums, with
// the prefix given; channels without an address are left out.
func (a *asyncAPI) subjects(prefix string) map[string]string {
	out := map[string]string{}
	for _, ch := range a.channels {
		if ch.address == "" {
			continue
		}
		partial := []string{""}
		for i, tok := range strings.Split(ch.address, ".") {
			var values []string
			switch {
			case tok == "{prefix}":
				values = []string{prefix}
			case strings.HasPrefix(tok, "{"):
				values = ch.params[strings.Trim(tok, "{}")]
				if values == nil {
					a.t.Fatalf("channel %s: parameter %s has no enum", ch.id, tok)
				}
			default:
				values = []string{tok}
			}
			var next []string
			for _, p := range partial {
				for _, v := range values {
					if i > 0 {
						v = "." + v
					}
					next = append(next, p+v)
				}
			}
			partial = next
		}
		for _, s := range partial {
			out[s] = ch.id
		}
	}
	return out
}

// match finds the channel of a subject and its parameter values.
func (a *asyncAPI) match(prefix, subject string) (*apiChannel, map[string]string) {
	toks := strings.Split(subject, ".")
	for i := range a.channels {
		ch := &a.channels[i]
		if ch.address == "" {
			continue
		}
		tmpl := strings.Split(ch.address, ".")
		if len(tmpl) != len(toks) {
			continue
		}
		vals := map[string]string{}
		ok := true
		for j, tt := range tmpl {
			switch {
			case tt == "{prefix}":
				ok = toks[j] == prefix
			case strings.HasPrefix(tt, "{"):
				name := strings.Trim(tt, "{}")
				vals[name] = toks[j]
				ok = slices.Contains(ch.params[name], toks[j])
			default:
				ok = tt == toks[j]
			}
			if !ok {
				break
			}
		}
		if ok {
			return ch, vals
		}
	}
	return nil, nil
}

// validate checks one real message against the channel's payload and
// headers schemas, and that the producer documents every field it sends.
func (a *asyncAPI) validate(ch *apiChannel, subject string, header nats.Header, body []byte) {
	a.t.Helper()
	m := ch.messages[0]
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		a.t.Errorf("%s: body is not JSON: %v: %s", subject, err, body)
		return
	}
	if err := a.schema(m.payloadRef).Validate(v); err != nil {
		a.t.Errorf("%s: %s does not match %s (channel %s): %v", subject, body, m.payloadRef, ch.id, err)
	}
	if obj, ok := v.(map[string]any); ok {
		doc := documentedFields(a.t, m.payloadRef)
		for k := range obj {
			if !doc[k] {
				a.t.Errorf("%s: field %q is sent but %s does not document it", subject, k, m.payloadRef)
			}
		}
	}
	if m.headersRef != "" {
		h := map[string]any{}
		for k := range header {
			h[k] = header.Get(k)
		}
		if err := a.schema(m.headersRef).Validate(h); err != nil {
			a.t.Errorf("%s: headers %v do not match %s: %v", subject, h, m.headersRef, err)
		}
	}
}

// builderSubjects is every subject domain.Subjects can build, by calling
// each of its builders over the vocabulary. A builder this table does not
// know fails the test: document it in docs/asyncapi.yaml and add it here.
func builderSubjects(t *testing.T, prefix string) map[string]string {
	t.Helper()
	memoryOps := []string{domain.OpCreated, domain.OpUpdated, domain.OpDeleted, domain.OpTruncated, domain.OpSnapshot}
	edgeOps := []string{domain.OpCreated, domain.OpUpdated, domain.OpDeleted}
	args := map[string][][]string{
		"Memory": {domain.MemoryTypes(), memoryOps},
		"Edge":   {domain.Backends(), edgeOps},
	}
	s := domain.Subjects{Prefix: prefix}
	v := reflect.ValueOf(s)
	out := map[string]string{}
	for i := 0; i < v.NumMethod(); i++ {
		name, fn := v.Type().Method(i).Name, v.Method(i)
		ft := fn.Type()
		switch {
		case name == "Stream":
			continue // the stream's capture patterns, not a subject
		case ft.NumIn() == 0 && ft.NumOut() == 1 && ft.Out(0).Kind() == reflect.String:
			out[fn.Call(nil)[0].String()] = name
		case args[name] != nil:
			lists := args[name]
			if ft.NumIn() != len(lists) {
				t.Fatalf("domain.Subjects.%s takes %d arguments; this test knows %d", name, ft.NumIn(), len(lists))
			}
			for _, x := range lists[0] {
				for _, y := range lists[1] {
					out[fn.Call([]reflect.Value{reflect.ValueOf(x), reflect.ValueOf(y)})[0].String()] = name
				}
			}
		default:
			t.Fatalf("domain.Subjects.%s is a subject builder this test does not know: document its subjects in docs/asyncapi.yaml and add it to builderSubjects", name)
		}
	}
	return out
}

// TestAsyncAPI_DocumentsEverySubject: every subject domain.Subjects builds
// is a documented channel address, and every documented address is one
// domain.Subjects builds; stored channels are captured by the stream, the
// admin one is not.
func TestAsyncAPI_DocumentsEverySubject(t *testing.T) {
	a := loadAsyncAPI(t)
	const prefix = "edgesync"
	built, documented := builderSubjects(t, prefix), a.subjects(prefix)
	for s, builder := range built {
		if _, ok := documented[s]; !ok {
			t.Errorf("domain.Subjects.%s builds %s, which docs/asyncapi.yaml does not document", builder, s)
		}
	}
	for s, ch := range documented {
		if _, ok := built[s]; !ok {
			t.Errorf("docs/asyncapi.yaml channel %s documents %s, which domain.Subjects never builds", ch, s)
		}
	}
	stream := domain.Subjects{Prefix: prefix}.Stream()
	for s := range documented {
		captured := false
		for _, p := range stream {
			if strings.HasSuffix(p, ".>") && strings.HasPrefix(s, strings.TrimSuffix(p, ">")) {
				captured = true
			}
		}
		if admin := s == (domain.Subjects{Prefix: prefix}).AdminReconcile(); captured == admin {
			t.Errorf("%s: captured by the stream = %v; only the admin subject is not", s, captured)
		}
	}
	// The reply of the request-reply operation is documented.
	ops, _ := a.doc["operations"].(map[string]any)
	reply, _ := ops["answerAdminReconcile"].(map[string]any)["reply"].(map[string]any)
	if reply == nil {
		t.Fatal("operation answerAdminReconcile has no reply")
	}
	// Each channel's messages are what some operation sends or receives.
	used := map[string]bool{}
	for _, op := range ops {
		om := op.(map[string]any)
		used[strings.TrimPrefix(om["channel"].(map[string]any)["$ref"].(string), "#/channels/")] = true
		if r, ok := om["reply"].(map[string]any); ok {
			used[strings.TrimPrefix(r["channel"].(map[string]any)["$ref"].(string), "#/channels/")] = true
		}
	}
	for _, ch := range a.channels {
		if !used[ch.id] {
			t.Errorf("channel %s is in no operation", ch.id)
		}
	}
}

// TestAsyncAPI_RealMessagesMatch runs the daemon with the ICP mirror and
// snapshot events on, drives every kind of event through it (memory and
// edge changes, a truncate, a gallery, an ICP upload, a reconcile asked for
// over NATS, a lost slot), and validates every message in the stream, and
// the admin request and reply, against the schemas docs/asyncapi.yaml
// names for their subjects.
func TestAsyncAPI_RealMessagesMatch(t *testing.T) {
	ctx := context.Background()
	a := loadAsyncAPI(t)
	e := newICPEnv(t, func(c *config.Config) { c.SnapshotEvents = true })
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	asset := bytes.Repeat([]byte("edgesync"), 64<<10) // 512 KiB: several progress messages
	e.blobs.put("a.png", asset)
	img := e.image(t, "a.png", len(asset))
	exec(`INSERT INTO notes (id, owner_id, title, body) VALUES ('00000000-0000-4000-8000-0000000000e1', gen_random_uuid(), 'n', 'b')`)
	exec(`UPDATE notes SET title = 'renamed' WHERE id = '00000000-0000-4000-8000-0000000000e1'`)
	exec(`DELETE FROM notes WHERE id = '00000000-0000-4000-8000-0000000000e1'`)
	exec(`INSERT INTO audio (owner_id, url) VALUES (gen_random_uuid(), 'https://blob/a.mp3')`)
	exec(`TRUNCATE audio`)
	exec(`INSERT INTO galleries (id, owner_id, title) VALUES ('00000000-0000-4000-8000-0000000000a1', gen_random_uuid(), 'g')`)
	exec(`INSERT INTO gallery_items (gallery_id, memory_id, memory_type, position) VALUES ('00000000-0000-4000-8000-0000000000a1', $1, 'image', 1)`, img)
	eventually(t, 20*time.Second, "the web2 edges", func() (bool, string) {
		var n int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM storage_edges WHERE memory_id = $1`, img).Scan(&n)
		return n == 2, fmt.Sprintf("%d edges", n)
	})
	e.storeForever(t, img)
	eventually(t, 90*time.Second, "the asset on ICP", func() (bool, string) {
		present, state, se, _ := e.icpAsset(t, img)
		return present && state == "idle", fmt.Sprintf("present=%v state=%s error=%q", present, state, se)
	})

	// The admin request and its reply, over NATS as ops send them.
	nc, err := nats.Connect(e.cfg.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	prefix := e.cfg.SubjectPrefix
	admin := domain.Subjects{Prefix: prefix}.AdminReconcile()
	adminCh, _ := a.match(prefix, admin)
	var replyCh *apiChannel
	for i := range a.channels {
		if a.channels[i].address == "" {
			replyCh = &a.channels[i]
		}
	}
	if adminCh == nil || replyCh == nil {
		t.Fatalf("docs/asyncapi.yaml lacks the admin channel (%v) or its reply channel (%v)", adminCh, replyCh)
	}
	for _, req := range []string{`{"dry_run":true}`, `{"dry_run":"yes"}`} {
		a.validateRequest(adminCh, admin, req)
		msg, err := nc.Request(admin, []byte(req), 10*time.Second)
		if err != nil {
			t.Fatalf("request %s: %v", req, err)
		}
		a.validate(replyCh, "reply to "+req, msg.Header, msg.Data)
		if want := `"run_id"`; req == `{"dry_run":true}` && !strings.Contains(string(msg.Data), want) {
			t.Errorf("reply %s, want a run id", msg.Data)
		}
		if want := `"code":"bad_request"`; req != `{"dry_run":true}` && !strings.Contains(string(msg.Data), want) {
			t.Errorf("reply %s, want %s", msg.Data, want)
		}
	}
	eventually(t, 30*time.Second, "the requested run to finish", func() (bool, string) {
		var n int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM reconcile_runs WHERE trigger = 'nats' AND state <> 'running'`).Scan(&n)
		return err == nil && n == 1, fmt.Sprint(n, err)
	})

	// A lost slot: stop, drop it, start again (re-snapshot: snapshot events).
	e.rd.stop(t)
	eventually(t, 20*time.Second, "the slot dropped", func() (bool, string) {
		_, err := e.pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, e.cfg.Slot)
		return err == nil, fmt.Sprint(err)
	})
	e.rd = startDaemon(t, e.cfg)
	waitSlot(t, e.pool, e.cfg.Slot)

	want := map[string]bool{}
	for _, ch := range a.channels {
		if ch.address != "" && ch.id != adminCh.id {
			want[ch.id] = true
		}
	}
	wantOps := map[string]bool{}
	for _, ch := range a.channels {
		for _, op := range ch.params["op"] {
			wantOps[ch.id+"/"+op] = true
		}
	}
	var seen map[string]int
	var msgs []streamMsg
	eventually(t, 60*time.Second, "a message on every stored channel and op", func() (bool, string) {
		msgs = readStream(t, e.cfg.NATSURL, e.cfg.Stream)
		seen = map[string]int{}
		for _, m := range msgs {
			if ch, vals := a.match(prefix, m.Subject); ch != nil {
				seen[ch.id]++
				if op, ok := vals["op"]; ok {
					seen[ch.id+"/"+op]++
				}
			}
		}
		var missing []string
		for id := range want {
			if seen[id] == 0 {
				missing = append(missing, id)
			}
		}
		for id := range wantOps {
			if seen[id] == 0 {
				missing = append(missing, id)
			}
		}
		sort.Strings(missing)
		return len(missing) == 0, "none yet on " + strings.Join(missing, ", ")
	})
	for _, m := range msgs {
		ch, _ := a.match(prefix, m.Subject)
		if ch == nil {
			t.Errorf("%s: a stored subject docs/asyncapi.yaml does not document", m.Subject)
			continue
		}
		a.validate(ch, m.Subject, m.Header, m.Raw)
		if ch.id == "memoryEvent" || ch.id == "edgeEvent" {
			var body struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(m.Raw, &body) != nil || body.ID != m.MsgID {
				t.Errorf("%s: Nats-Msg-Id %q differs from the payload id %q", m.Subject, m.MsgID, body.ID)
			}
		}
	}
	t.Logf("validated %d stored messages: %v", len(msgs), seen)
}

// validateRequest checks a request body against the admin channel's schema
// (the requests the test sends are what ops send; a malformed one is only
// checked to be refused by the schema too).
func (a *asyncAPI) validateRequest(ch *apiChannel, subject, body string) {
	a.t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	err = a.schema(ch.messages[0].payloadRef).Validate(v)
	if good := body == `{"dry_run":true}`; good != (err == nil) {
		a.t.Errorf("%s: request %s: schema says %v", subject, body, err)
	}
}
