package daemon

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// eventSchema compiles docs/events.schema.json (the envelope) or one of its
// $defs.
func eventSchema(t testing.TB, ref string) *jsonschema.Schema {
	t.Helper()
	f, err := os.ReadFile("../docs/events.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	const url = "https://github.com/edgesync/edgesync/docs/events.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url + ref)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validateEvent checks one message body against the schema.
func validateEvent(t testing.TB, s *jsonschema.Schema, subject string, body []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: not JSON: %v", subject, err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s: %s does not match docs/events.schema.json: %v", subject, body, err)
	}
}

func TestEventSchema_RejectsBadEnvelopes(t *testing.T) {
	s := eventSchema(t, "")
	good := `{"id":"edgesync/0/1/0","op":"created","memory_id":"0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c","memory_type":"image",
		"source":{"table":"public.images","lsn":"0/1","commit_lsn":"0/2","xid":5,"commit_time":"2026-11-26T20:00:00Z"},
		"before":null,"after":{"id":"x"},"emitted_at":"2026-11-26T20:00:00Z"}`
	var m map[string]any
	if err := json.Unmarshal([]byte(good), &m); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(m); err != nil {
		t.Fatalf("good envelope refused: %v", err)
	}
	for _, mutate := range []func(map[string]any){
		func(m map[string]any) { m["op"] = "inserted" },
		func(m map[string]any) { m["memory_type"] = "picture" },
		func(m map[string]any) { m["memory_id"] = "0B3C8F3E-4A5E-4F7E-9A3C-1D2E3F4A5B6C" },
		func(m map[string]any) { delete(m, "source") },
		func(m map[string]any) { m["extra"] = 1 },
		func(m map[string]any) { m["memory_id"] = nil },
	} {
		b, _ := json.Marshal(m)
		var c map[string]any
		_ = json.Unmarshal(b, &c)
		mutate(c)
		if err := s.Validate(c); err == nil {
			t.Errorf("bad envelope accepted: %v", c)
		}
	}
}
