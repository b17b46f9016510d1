package cdc

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendRowJSON(t *testing.T) {
	rel := &Relation{Columns: []Column{
		{Name: "id", OID: 2950}, {Name: "n", OID: oidInt8}, {Name: "ok", OID: oidBool},
		{Name: "title", OID: 25}, {Name: "at", OID: oidTimestamptz}, {Name: "doc", OID: oidJSONB},
		{Name: "big", OID: 25}, {Name: "f", OID: oidFloat8}, {Name: "kind", OID: 99999},
	}}
	row := Row{
		{Kind: Text, Data: []byte("0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c")},
		{Kind: Text, Data: []byte("-42")},
		{Kind: Text, Data: []byte("t")},
		{Kind: Text, Data: []byte("héllo \"w\"\n\x01 \u2028 ✓")},
		{Kind: Text, Data: []byte("2026-11-26 20:00:00.123456+00")},
		{Kind: Text, Data: []byte(`{"a": [1, 2]}`)},
		{Kind: Unchanged},
		{Kind: Text, Data: []byte("NaN")},
		{Kind: Null},
	}
	b := AppendRowJSON(nil, rel, row)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	if m["n"] != float64(-42) || m["ok"] != true || m["title"] != "héllo \"w\"\n\x01 \u2028 ✓" || m["at"] != "2026-11-26T20:00:00.123456Z" || m["f"] != "NaN" || m["kind"] != nil {
		t.Fatalf("decoded %v", m)
	}
	if _, ok := m["big"]; ok {
		t.Fatal("unchanged TOAST value was encoded")
	}
	if got := UnchangedColumns(rel, row); len(got) != 1 || got[0] != "big" {
		t.Fatalf("unchanged = %v", got)
	}
	if s := string(AppendRowJSON(nil, rel, nil)); s != "null" {
		t.Fatal(s)
	}
}

func TestAppendString_InvalidUTF8(t *testing.T) {
	b := AppendString(nil, "a\xffb")
	if !json.Valid(b) || !strings.Contains(string(b), `\ufffd`) {
		t.Fatalf("%s", b)
	}
}

func FuzzAppendRowJSON(f *testing.F) {
	f.Add([]byte("x"), uint32(25))
	f.Add([]byte("1e5"), uint32(oidInt8))
	f.Add([]byte("2026-01-01 00:00:00+00"), uint32(oidTimestamptz))
	f.Fuzz(func(t *testing.T, data []byte, oid uint32) {
		if oid == oidJSON || oid == oidJSONB {
			return // embedded verbatim: Postgres guarantees validity
		}
		rel := &Relation{Columns: []Column{{Name: "c", OID: oid}}}
		b := AppendRowJSON(nil, rel, Row{{Kind: Text, Data: data}})
		if !json.Valid(b) {
			t.Fatalf("invalid JSON for oid %d %q: %s", oid, data, b)
		}
	})
}
