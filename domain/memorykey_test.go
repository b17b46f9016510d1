package domain

import (
	"strings"
	"testing"
)

func TestParseMemoryKey(t *testing.T) {
	id := "0b7f6c3e-1d2a-4c5b-9e8f-123456789abc"
	k, ok := ParseMemoryKey(id, MemoryNote)
	if !ok || k.ID[0] != 0x0b || k.ID[15] != 0xbc || k.Type != MemoryTypeIndex(MemoryNote) || k.Type == 0 {
		t.Fatalf("%x %v", k, ok)
	}
	if k2, _ := ParseMemoryKey(id, MemoryImage); k2 == k {
		t.Fatal("the type is not part of the key")
	}
	for _, bad := range [][2]string{
		{strings.ToUpper(id), "note"}, {id[:35], "note"}, {strings.Replace(id, "-", "x", 1), "note"},
		{"m1", "image"}, {id, "photo"}, {id, ""}, {strings.Replace(id, "0b", "0g", 1), "note"},
		{id[:35] + "G", "note"},
	} {
		if _, ok := ParseMemoryKey(bad[0], bad[1]); ok {
			t.Errorf("ParseMemoryKey(%q, %q) accepted", bad[0], bad[1])
		}
	}
	seen := map[uint8]bool{}
	for _, mt := range MemoryTypes() {
		if i := MemoryTypeIndex(mt); i == 0 || seen[i] {
			t.Errorf("MemoryTypeIndex(%s) = %d", mt, i)
		}
		seen[MemoryTypeIndex(mt)] = true
	}
}
