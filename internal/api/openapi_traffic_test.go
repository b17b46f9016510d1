package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/edgesync/edgesync/internal/presencecache"
	"github.com/edgesync/edgesync/reconcile"
)

// openAPIDocURL names docs/openapi.yaml (converted to JSON Schema) as a
// resource of the schema compiler; response schemas reference into it.
const openAPIDocURL = "http://edgesync.test/openapi.json"

// contract is docs/openapi.yaml read for response validation: each
// operation's documented responses, their media types, and the JSON Schema
// (converted from OpenAPI 3.0) of each JSON body.
type contract struct {
	t        *testing.T
	doc      map[string]any
	compiler *jsonschema.Compiler
	compiled map[string]*jsonschema.Schema
	ops      map[string]map[string]any // operationId -> operation object
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	doc := toJSONish(t, y).(map[string]any)
	c := &contract{t: t, doc: doc, compiled: map[string]*jsonschema.Schema{}, ops: map[string]map[string]any{}}
	for _, item := range doc["paths"].(map[string]any) {
		for _, op := range item.(map[string]any) {
			o := op.(map[string]any)
			c.ops[o["operationId"].(string)] = o
		}
	}
	// The whole document is one resource: its components (converted) are what
	// the response schemas' $refs point into.
	comps := map[string]any{}
	if s, ok := doc["components"].(map[string]any)["schemas"].(map[string]any); ok {
		comps["schemas"] = convertSchemaMap(s)
	}
	if p, ok := doc["components"].(map[string]any)["parameters"].(map[string]any); ok {
		comps["parameters"] = p
	}
	c.compiler = jsonschema.NewCompiler()
	c.compiler.DefaultDraft(jsonschema.Draft2020)
	c.compiler.AssertFormat() // uuid and date-time are part of the contract
	if err := c.compiler.AddResource(openAPIDocURL, map[string]any{"components": comps}); err != nil {
		t.Fatal(err)
	}
	return c
}

// toJSONish turns YAML-decoded values into what jsonschema expects
// (map[string]any, json.Number) by a round trip through JSON.
func toJSONish(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("openapi.yaml as JSON: %v", err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func convertSchemaMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = convertSchema(v)
	}
	return out
}

// convertSchema translates an OpenAPI 3.0 Schema Object into JSON Schema
// (2020-12): nullable: true becomes anyOf [the schema, {type: null}] (which
// works for $ref'd and enum schemas too), local $refs become absolute ones
// into openAPIDocURL, and OpenAPI-only keywords are dropped.
func convertSchema(v any) any {
	s, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	nullable := false
	for k, val := range s {
		switch k {
		case "nullable":
			nullable, _ = val.(bool)
		case "example", "xml", "discriminator", "externalDocs":
		case "$ref":
			ref := val.(string)
			if strings.HasPrefix(ref, "#") {
				ref = openAPIDocURL + ref
			}
			out[k] = ref
		case "properties", "patternProperties":
			out[k] = convertSchemaMap(val.(map[string]any))
		case "items", "additionalProperties", "not":
			out[k] = convertSchema(val)
		case "allOf", "anyOf", "oneOf":
			list := val.([]any)
			conv := make([]any, len(list))
			for i, x := range list {
				conv[i] = convertSchema(x)
			}
			out[k] = conv
		default:
			out[k] = val
		}
	}
	if nullable {
		return map[string]any{"anyOf": []any{out, map[string]any{"type": "null"}}}
	}
	return out
}

// deref follows a local $ref (#/components/...) of a non-schema object
// (a response).
func (c *contract) deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	for m != nil {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = c.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			cur = cur.(map[string]any)[part]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// response returns the documented response of op for status, or nil.
func (c *contract) response(op string, status int) map[string]any {
	o := c.ops[op]
	if o == nil {
		return nil
	}
	rs, _ := o["responses"].(map[string]any)
	return c.deref(rs[fmt.Sprint(status)])
}

// schema compiles the JSON schema of op's status answer in mediaType.
func (c *contract) schema(op string, status int, mediaType string) (*jsonschema.Schema, error) {
	key := fmt.Sprintf("%s/%d/%s", op, status, mediaType)
	if s, ok := c.compiled[key]; ok {
		return s, nil
	}
	resp := c.response(op, status)
	content, _ := resp["content"].(map[string]any)
	mt, _ := content[mediaType].(map[string]any)
	raw, ok := mt["schema"]
	if !ok {
		return nil, fmt.Errorf("no schema for %s", mediaType)
	}
	url := fmt.Sprintf("http://edgesync.test/responses/%s/%d.json", op, status)
	if err := c.compiler.AddResource(url, convertSchema(raw)); err != nil {
		return nil, err
	}
	s, err := c.compiler.Compile(url)
	if err != nil {
		return nil, err
	}
	c.compiled[key] = s
	return s, nil
}

// check validates one real answer of op against the contract: the status is
// documented for op, the Content-Type is one of its media types, and a JSON
// body validates against the schema.
func (c *contract) check(what, op string, status int, header http.Header, body []byte) {
	c.t.Helper()
	resp := c.response(op, status)
	if resp == nil {
		c.t.Errorf("%s: status %d is not documented for %s (body %.300s)", what, status, op, body)
		return
	}
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(body) > 0 {
			c.t.Errorf("%s: %s %d documents no body, got %.300s", what, op, status, body)
		}
		return
	}
	ct := header.Get("Content-Type")
	mediaType, _, err := mime.ParseMediaType(ct)
	if err != nil {
		c.t.Errorf("%s: Content-Type %q: %v", what, ct, err)
		return
	}
	if _, ok := content[mediaType]; !ok {
		documented := make([]string, 0, len(content))
		for k := range content {
			documented = append(documented, k)
		}
		sort.Strings(documented)
		c.t.Errorf("%s: Content-Type %q, documented for %s %d: %v", what, ct, op, status, documented)
		return
	}
	if mediaType != "application/json" {
		return
	}
	s, err := c.schema(op, status, mediaType)
	if err != nil {
		c.t.Errorf("%s: schema of %s %d: %v", what, op, status, err)
		return
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		c.t.Errorf("%s: body is not JSON: %v (%.300s)", what, err, body)
		return
	}
	if err := s.Validate(v); err != nil {
		c.t.Errorf("%s: body does not match the schema of %s %d: %v\nbody: %.1000s", what, op, status, err, body)
	}
	// JSON Schema lets an object carry fields its schema does not name; the
	// contract should name every field the server sends.
	for _, f := range c.undocumented(content[mediaType].(map[string]any)["schema"], v, "") {
		c.t.Errorf("%s: field %s is not documented for %s %d", what, f, op, status)
	}
}

// undocumented lists the fields of v (at path) that schema, an OpenAPI
// schema (not converted), does not name in the properties of an object
// schema that has properties and no additionalProperties.
func (c *contract) undocumented(schema, v any, path string) []string {
	s := c.deref(schema)
	if s == nil || v == nil {
		return nil
	}
	switch val := v.(type) {
	case []any:
		var out []string
		for i, x := range val {
			out = append(out, c.undocumented(s["items"], x, fmt.Sprintf("%s/%d", path, i))...)
		}
		return out
	case map[string]any:
		props := map[string]any{}
		closed := false // some branch names its properties
		var open bool   // additionalProperties given: other fields are documented
		var extra any   // the schema of the other fields, if one
		var collect func(s map[string]any)
		collect = func(s map[string]any) {
			if s == nil {
				return
			}
			if ap, ok := s["additionalProperties"]; ok {
				open = true
				if _, isSchema := ap.(map[string]any); isSchema {
					extra = ap
				}
			}
			if p, ok := s["properties"].(map[string]any); ok {
				closed = true
				for k, ps := range p {
					if _, dup := props[k]; !dup {
						props[k] = ps
					}
				}
			}
			for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
				list, _ := s[kw].([]any)
				for _, x := range list {
					collect(c.deref(x))
				}
			}
		}
		collect(s)
		keys := make([]string, 0, len(val))
		for k := range val {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			ps, ok := props[k]
			if !ok && extra != nil {
				ps, ok = extra, true
			}
			if !ok {
				if closed && !open {
					out = append(out, path+"/"+k)
				}
				continue
			}
			out = append(out, c.undocumented(ps, val[k], path+"/"+k)...)
		}
		return out
	}
	return nil
}

// TestOpenAPI_RealTraffic sends real requests to every route of routeTable()
// (its main answers: success, bad parameter, missing token, unknown id,
// conflict) against a server on a real Postgres, and checks each answer
// against docs/openapi.yaml: status documented, Content-Type documented, JSON
// body valid against the response schema and carrying no field the schema
// does not name. A route the test does not exercise fails it, and so does a
// counts source (live, mv, tracker, memory) no answer was checked with.
func TestOpenAPI_RealTraffic(t *testing.T) {
	c := loadContract(t)
	var ready, natsDown atomic.Bool
	ready.Store(true)
	natsDown.Store(true)
	health := NewHealth([]BackendCheck{
		{Name: "postgres", Check: func(context.Context) error { return nil }},
		{Name: "nats", Check: func(context.Context) error {
			if natsDown.Load() {
				return Unhealthy("connection refused")
			}
			return nil
		}},
	}, 0, nil)
	cache := presencecache.New(presencecache.Config{TTL: time.Minute}, nil)
	e := newEnv(t, func(_ *Config, d *Deps) {
		d.Ready = ready.Load
		d.Health = health
		d.Presence = cache
	})
	cache.Following(true)

	// Seeded data: an image with an asset, a note, a gallery of both, and
	// edges in every sync state with their optional columns filled.
	img := e.image(ptr("https://b.example/a.png"))
	bare := e.image(nil)
	note := e.note()
	g := e.gallery([2]string{img, "image"}, [2]string{note, "note"})
	emptyG := e.gallery()
	e.edge(img, "image", "metadata", "neon-db", true, "idle")
	e.edge(img, "image", "asset", "vercel-blob", true, "migrating")
	e.edge(note, "note", "metadata", "neon-db", true, "failed")
	e.exec(`UPDATE storage_edges SET sync_error = 'boom', last_synced_at = now(), location = 'neon://notes' WHERE memory_id = $1`, note)

	byOp := map[string]route{}
	for _, r := range routeTable() {
		byOp[r.op] = r
	}
	exercised := map[string][]int{}
	client := e.http.Client()
	cur := e                     // the server send talks to
	sources := map[string]bool{} // "operationId source" of the answers (where counts came from)
	send := func(op, method, path, token string, body any) (int, []byte) {
		t.Helper()
		if _, ok := byOp[op]; !ok {
			t.Fatalf("%s is not in the route table", op)
		}
		var rd io.Reader
		switch b := body.(type) {
		case nil:
		case string:
			rd = strings.NewReader(b)
		default:
			raw, _ := json.Marshal(b)
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequest(method, cur.http.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		c.check(method+" "+path, op, resp.StatusCode, resp.Header, raw)
		exercised[op] = append(exercised[op], resp.StatusCode)
		var answer struct {
			Source    string                    `json:"source"`
			Gallery   struct{ Source string }   `json:"gallery"`
			Galleries []struct{ Source string } `json:"galleries"`
		}
		if json.Unmarshal(raw, &answer) == nil {
			for _, src := range append([]string{answer.Source, answer.Gallery.Source}, func() (out []string) {
				for _, g := range answer.Galleries {
					out = append(out, g.Source)
				}
				return out
			}()...) {
				if src != "" {
					sources[op+" "+src] = true
				}
			}
		}
		return resp.StatusCode, raw
	}
	// expect sends and also insists on the status the case is about, so a
	// case that drifts to another answer does not pass unnoticed.
	expect := func(want int, op, method, path, token string, body any) []byte {
		t.Helper()
		got, raw := send(op, method, path, token, body)
		if got != want {
			t.Errorf("%s %s = %d, want %d (%.300s)", method, path, got, want, raw)
		}
		return raw
	}
	unknown := uuid.NewString()

	// PUT /api/storage/edges
	full := map[string]any{
		"memory_id": bare, "memory_type": "image", "artifact": "asset", "backend": "icp-canister", "present": true,
		"location": "icp://x", "content_hash": strings.Repeat("ab", 32), "size_bytes": 42, "sync_state": "failed",
		"sync_error": "upload refused", "last_synced_at": time.Now().UTC().Format(time.RFC3339Nano),
	}
	expect(200, "putStorageEdge", "PUT", "/api/storage/edges", testToken, full)
	expect(200, "putStorageEdge", "PUT", "/api/storage/edges", testToken,
		map[string]any{"memory_id": bare, "memory_type": "image", "artifact": "metadata", "backend": "neon-db"})
	expect(400, "putStorageEdge", "PUT", "/api/storage/edges", testToken, `{"memory_id": "nope"}`)
	expect(400, "putStorageEdge", "PUT", "/api/storage/edges", testToken, `{`)
	expect(401, "putStorageEdge", "PUT", "/api/storage/edges", "", full)
	expect(401, "putStorageEdge", "PUT", "/api/storage/edges", "wrong", full)
	expect(404, "putStorageEdge", "PUT", "/api/storage/edges", testToken,
		map[string]any{"memory_id": unknown, "memory_type": "image", "artifact": "metadata", "backend": "neon-db"})
	expect(413, "putStorageEdge", "PUT", "/api/storage/edges", testToken, `{"location":"`+strings.Repeat("x", 2<<20)+`"}`)

	// GET /api/galleries
	expect(200, "listGalleries", "GET", "/api/galleries", "", nil)
	expect(200, "listGalleries", "GET", "/api/galleries?limit=1", "", nil)
	expect(200, "listGalleries", "GET", "/api/galleries?q=g&status=partial", "", nil)
	expect(200, "listGalleries", "GET", "/api/galleries?status=empty", "", nil)
	expect(400, "listGalleries", "GET", "/api/galleries?limit=0", "", nil)
	expect(400, "listGalleries", "GET", "/api/galleries?status=bogus", "", nil)
	expect(400, "listGalleries", "GET", "/api/galleries?cursor=garbage", "", nil)

	// GET /api/galleries/presence
	expect(200, "getGalleriesPresence", "GET", "/api/galleries/presence?ids="+g+","+unknown+","+emptyG, "", nil)
	expect(400, "getGalleriesPresence", "GET", "/api/galleries/presence", "", nil)
	expect(400, "getGalleriesPresence", "GET", "/api/galleries/presence?ids=nope", "", nil)

	// GET /api/galleries/{id}/presence (first pages may come from the cache, so twice)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence", "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence", "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?fresh=true", "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+emptyG+"/presence", "", nil)
	var page struct {
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.Unmarshal(expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?limit=1", "", nil), &page); err != nil || page.NextCursor == nil {
		t.Errorf("limit 1 of a two-item gallery: next_cursor %v (%v)", page.NextCursor, err)
	} else {
		expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?limit=1&cursor="+*page.NextCursor, "", nil)
	}
	expect(400, "getGalleryPresence", "GET", "/api/galleries/nope/presence", "", nil)
	expect(400, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?limit=0", "", nil)
	expect(404, "getGalleryPresence", "GET", "/api/galleries/"+unknown+"/presence", "", nil)

	// GET /api/memories/{type}/{id}/presence
	expect(200, "getMemoryPresence", "GET", "/api/memories/image/"+img+"/presence", "", nil)
	expect(200, "getMemoryPresence", "GET", "/api/memories/image/"+img+"/presence", "", nil)
	expect(200, "getMemoryPresence", "GET", "/api/memories/image/"+bare+"/presence", "", nil)
	expect(200, "getMemoryPresence", "GET", "/api/memories/note/"+note+"/presence", "", nil)
	expect(400, "getMemoryPresence", "GET", "/api/memories/bogus/"+img+"/presence", "", nil)
	expect(400, "getMemoryPresence", "GET", "/api/memories/image/nope/presence", "", nil)
	expect(404, "getMemoryPresence", "GET", "/api/memories/image/"+unknown+"/presence", "", nil)
	cache.Following(false) // the cache serves nothing: live answers
	expect(200, "getMemoryPresence", "GET", "/api/memories/image/"+img+"/presence", "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence", "", nil)
	cache.Following(true)

	// Counts from the materialized view (cursor pages skip the presence cache)...
	e.exec(`SELECT refresh_gallery_presence()`)
	e.exec(`INSERT INTO edgesync_mv_refresh VALUES ('gallery_presence_mv', now(), 1)`)
	cache.GalleryChanged(g)
	expect(200, "listGalleries", "GET", "/api/galleries", "", nil)
	expect(200, "getGalleriesPresence", "GET", "/api/galleries/presence?ids="+g, "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence", "", nil)
	if page.NextCursor != nil {
		expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?limit=1&cursor="+*page.NextCursor, "", nil)
	}
	// ... and from the gallery status tracker.
	startTracker(t, e)
	eventually(t, 10*time.Second, "the tracker's rows", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM edgesync_gallery_status`).Scan(&n)
		return n == 2
	})
	cache.GalleryChanged(g)
	expect(200, "listGalleries", "GET", "/api/galleries", "", nil)
	expect(200, "listGalleries", "GET", "/api/galleries?status=web2_only", "", nil)
	expect(200, "getGalleriesPresence", "GET", "/api/galleries/presence?ids="+g+","+emptyG, "", nil)
	expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence", "", nil)
	if page.NextCursor != nil {
		expect(200, "getGalleryPresence", "GET", "/api/galleries/"+g+"/presence?limit=1&cursor="+*page.NextCursor, "", nil)
	}
	var wantSources []string
	for _, op := range []string{"listGalleries", "getGalleriesPresence"} {
		wantSources = append(wantSources, op+" live", op+" mv", op+" tracker")
	}
	wantSources = append(wantSources, "getGalleryPresence live", "getGalleryPresence mv", "getGalleryPresence tracker",
		"getGalleryPresence memory", "getMemoryPresence live", "getMemoryPresence memory")
	for _, k := range wantSources {
		if !sources[k] {
			t.Errorf("no answer of %s was checked (sources seen: %v)", k, sources)
		}
	}

	// GET /api/storage/sync-status
	expect(200, "listSyncStatus", "GET", "/api/storage/sync-status", "", nil)
	expect(200, "listSyncStatus", "GET", "/api/storage/sync-status?state=failed&backend=neon-db&memory_type=note", "", nil)
	var sync struct {
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.Unmarshal(expect(200, "listSyncStatus", "GET", "/api/storage/sync-status?limit=1", "", nil), &sync); err != nil || sync.NextCursor == nil {
		t.Errorf("sync-status limit 1: next_cursor %v (%v)", sync.NextCursor, err)
	} else {
		expect(200, "listSyncStatus", "GET", "/api/storage/sync-status?limit=1&cursor="+*sync.NextCursor, "", nil)
	}
	expect(400, "listSyncStatus", "GET", "/api/storage/sync-status?state=idle", "", nil)
	expect(400, "listSyncStatus", "GET", "/api/storage/sync-status?limit=501", "", nil)

	// GET /api/storage/sync-status/stream: refusals are JSON; the 200 is an
	// event stream, checked by its Content-Type and first bytes.
	expect(400, "streamSyncStatus", "GET", "/api/storage/sync-status/stream?memory=123", "", nil)
	expect(400, "streamSyncStatus", "GET", "/api/storage/sync-status/stream?backend=bogus", "", nil)
	expect(404, "streamSyncStatus", "GET", "/api/storage/sync-status/stream?gallery="+unknown, "", nil)
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/api/storage/sync-status/stream?gallery="+g, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		c.check("GET stream", "streamSyncStatus", resp.StatusCode, resp.Header, nil)
		exercised["streamSyncStatus"] = append(exercised["streamSyncStatus"], resp.StatusCode)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			return
		}
		first, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || first != "retry: 2000\n" {
			t.Errorf("stream's first line %q (%v), want the retry field", first, err)
		}
	}()

	// POST /api/galleries/{id}/store-forever
	expect(202, "storeGalleryForever", "POST", "/api/galleries/"+g+"/store-forever", testToken, nil)
	expect(202, "storeGalleryForever", "POST", "/api/galleries/"+g+"/store-forever", testToken, nil) // nothing new: already
	expect(400, "storeGalleryForever", "POST", "/api/galleries/nope/store-forever", testToken, nil)
	expect(401, "storeGalleryForever", "POST", "/api/galleries/"+g+"/store-forever", "", nil)
	expect(404, "storeGalleryForever", "POST", "/api/galleries/"+unknown+"/store-forever", testToken, nil)

	// POST /api/memories/{type}/{id}/store-forever
	expect(202, "storeMemoryForever", "POST", "/api/memories/image/"+bare+"/store-forever", testToken, nil)
	expect(400, "storeMemoryForever", "POST", "/api/memories/bogus/"+bare+"/store-forever", testToken, nil)
	expect(400, "storeMemoryForever", "POST", "/api/memories/image/nope/store-forever", testToken, nil)
	expect(401, "storeMemoryForever", "POST", "/api/memories/image/"+bare+"/store-forever", "", nil)
	expect(404, "storeMemoryForever", "POST", "/api/memories/image/"+unknown+"/store-forever", testToken, nil)

	// GET /api/health/backends: 503 before the first check and with a backend down, 200 all up.
	expect(503, "getBackendHealth", "GET", "/api/health/backends", "", nil)
	health.Check(context.Background())
	expect(503, "getBackendHealth", "GET", "/api/health/backends", "", nil)
	natsDown.Store(false)
	health.Check(context.Background())
	expect(200, "getBackendHealth", "GET", "/api/health/backends", "", nil)

	// POST /admin/reconcile, GET /admin/reconcile/{run_id}, GET /api/reconcile/runs
	expect(200, "listReconcileRuns", "GET", "/api/reconcile/runs", "", nil) // none yet
	var started struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal(expect(202, "startReconcile", "POST", "/admin/reconcile?dry_run=true", testToken, nil), &started); err != nil {
		t.Fatal(err)
	}
	expect(409, "startReconcile", "POST", "/admin/reconcile", testToken, nil)
	expect(400, "startReconcile", "POST", "/admin/reconcile?dry_run=maybe", testToken, nil)
	expect(401, "startReconcile", "POST", "/admin/reconcile", "", nil)
	expect(200, "getReconcileRun", "GET", "/admin/reconcile/"+started.RunID, testToken, nil) // running
	// A finished run with its report, as the real runner records it.
	e.rec.mu.Lock()
	run := e.rec.runs[started.RunID]
	done := time.Now()
	run.State, run.FinishedAt = "done", &done
	run.Report = &reconcile.Report{Missing: 2, Fixed: 2, DurationMS: 3, DryRun: true, ByType: map[string]*reconcile.Counts{"image": {}}}
	e.rec.runs[started.RunID] = run
	failedID := uuid.NewString()
	e.rec.runs[failedID] = reconcile.Run{ID: failedID, Trigger: "schedule", State: "error", Error: "boom", StartedAt: done.Add(-time.Minute), FinishedAt: &done}
	e.rec.running = false
	e.rec.mu.Unlock()
	expect(200, "getReconcileRun", "GET", "/admin/reconcile/"+started.RunID, testToken, nil)
	expect(200, "getReconcileRun", "GET", "/admin/reconcile/"+failedID, testToken, nil)
	expect(400, "getReconcileRun", "GET", "/admin/reconcile/nope", testToken, nil)
	expect(401, "getReconcileRun", "GET", "/admin/reconcile/"+started.RunID, "", nil)
	expect(404, "getReconcileRun", "GET", "/admin/reconcile/"+unknown, testToken, nil)
	expect(200, "listReconcileRuns", "GET", "/api/reconcile/runs?limit=5", "", nil)
	expect(400, "listReconcileRuns", "GET", "/api/reconcile/runs?limit=0", "", nil)
	expect(400, "listReconcileRuns", "GET", "/api/reconcile/runs?limit=201", "", nil)

	// Liveness, readiness, metrics.
	expect(200, "getLiveness", "GET", "/healthz", "", nil)
	expect(200, "getReadiness", "GET", "/readyz", "", nil)
	ready.Store(false)
	expect(503, "getReadiness", "GET", "/readyz", "", nil)
	ready.Store(true)
	if m := expect(200, "getMetrics", "GET", "/metrics", "", nil); len(m) == 0 {
		t.Error("/metrics answered no text")
	}

	// The console: status and content type.
	expect(200, "getConsole", "GET", "/", "", nil)
	for _, f := range []string{"console.js", "console.css", "icon.svg", "metrics.js"} {
		expect(200, "getConsoleAsset", "GET", "/console/"+f, "", nil)
	}
	expect(404, "getConsoleAsset", "GET", "/console/index.html", "", nil)
	expect(404, "getConsoleAsset", "GET", "/console/nope.js", "", nil)

	// A server without the ICP mirror, a reconciler or a health checker:
	// store forever and reconcile answer 503.
	cur = newEnv(t, func(c *Config, d *Deps) { c.ICPMirror, d.Reconciler = false, nil })
	expect(503, "storeGalleryForever", "POST", "/api/galleries/"+unknown+"/store-forever", testToken, nil)
	expect(503, "storeMemoryForever", "POST", "/api/memories/image/"+unknown+"/store-forever", testToken, nil)
	expect(503, "startReconcile", "POST", "/admin/reconcile", testToken, nil)
	expect(503, "getReconcileRun", "GET", "/admin/reconcile/"+unknown, testToken, nil)
	expect(503, "listReconcileRuns", "GET", "/api/reconcile/runs", "", nil)
	expect(200, "getBackendHealth", "GET", "/api/health/backends", "", nil)

	// A server without an admin token: every token route answers 403.
	cur = newEnv(t, func(c *Config, _ *Deps) { c.AdminToken = "" })
	for _, r := range routeTable() {
		if r.token {
			path := strings.NewReplacer("{id}", unknown, "{type}", "image", "{run_id}", unknown).Replace(r.path)
			expect(403, r.op, r.method, path, testToken, nil)
		}
	}

	// Every route was exercised; list what each answered.
	var missing []string
	for _, r := range routeTable() {
		codes := exercised[r.op]
		if len(codes) == 0 {
			missing = append(missing, r.method+" "+r.path+" ("+r.op+")")
			continue
		}
		seen := map[int]bool{}
		var uniq []int
		for _, code := range codes {
			if !seen[code] {
				seen[code] = true
				uniq = append(uniq, code)
			}
		}
		sort.Ints(uniq)
		t.Logf("%-6s %-40s %-22s %2d requests, statuses %v", r.method, r.path, r.op, len(codes), uniq)
	}
	if len(missing) > 0 {
		t.Fatalf("routes not exercised against docs/openapi.yaml: %v", missing)
	}
}
