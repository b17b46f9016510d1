package daemon

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/reconcile"
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
	// Fields added by a later minor version are allowed (docs/consumers.md).
	later := map[string]any{"added_later": 1}
	for k, v := range m {
		later[k] = v
	}
	later["source"] = map[string]any{"table": "public.images", "lsn": "0/1", "commit_lsn": "0/2", "xid": 5, "commit_time": "2026-11-26T20:00:00Z", "origin": "x"}
	if err := s.Validate(later); err != nil {
		t.Fatalf("an envelope with a field added later is refused: %v", err)
	}
	for _, mutate := range []func(map[string]any){
		func(m map[string]any) { m["op"] = "inserted" },
		func(m map[string]any) { m["memory_type"] = "picture" },
		func(m map[string]any) { m["memory_id"] = "0B3C8F3E-4A5E-4F7E-9A3C-1D2E3F4A5B6C" },
		func(m map[string]any) { delete(m, "source") },
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

// The typed events outside the change envelope match their schemas.
func TestEventSchema_TypedEvents(t *testing.T) {
	now := time.Now().UTC()
	finished := now.Add(time.Second)
	cases := []struct {
		ref  string
		body any
		bad  string
	}{
		{"#/$defs/slot_lost", cdc.SlotLostEvent{Event: "slot_lost", Slot: "edgesync", LastConfirmedLSN: "0/16B3748", DetectedAt: now},
			`{"event":"slot_lost","slot":"edgesync","last_confirmed_lsn":"yesterday","detected_at":"2026-12-03T10:00:00Z"}`},
		{"#/$defs/progress", cdc.ProgressEvent{MemoryID: "0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c", MemoryType: "video", BytesDone: 1 << 20, BytesTotal: 3 << 20, At: now},
			`{"memory_id":"0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c","memory_type":"video","bytes_done":-1,"bytes_total":3,"at":"2026-12-03T10:00:00Z"}`},
		{"#/$defs/reconcile_completed", reconcile.Run{ID: "r1", Trigger: "schedule", State: "done", StartedAt: now, FinishedAt: &finished, Report: &reconcile.Report{Orphans: 2, Fixed: 2, DurationMS: 5}},
			`{"run_id":"r1","trigger":"schedule","dry_run":false,"state":"sleeping","started_at":"2026-12-03T10:00:00Z"}`},
	}
	for _, c := range cases {
		s := eventSchema(t, c.ref)
		b, err := json.Marshal(c.body)
		if err != nil {
			t.Fatal(err)
		}
		validateEvent(t, s, c.ref, b)
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(c.bad))
		if err != nil {
			t.Fatal(err)
		}
		if s.Validate(v) == nil {
			t.Errorf("%s accepts %s", c.ref, c.bad)
		}
	}
}
