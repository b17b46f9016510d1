package domain

import (
	"strings"
	"testing"
)

func TestCanonicalUUID(t *testing.T) {
	cases := map[string]bool{
		"0b3e2a4c-1f2d-4e5f-8a9b-0c1d2e3f4a5b":   true,
		"0B3E2A4C-1F2D-4E5F-8A9B-0C1D2E3F4A5B":   false, // upper case
		"{0b3e2a4c-1f2d-4e5f-8a9b-0c1d2e3f4a5b}": false,
		"0b3e2a4c1f2d4e5f8a9b0c1d2e3f4a5b":       false,
		"0b3e2a4c-1f2d-4e5f-8a9b-0c1d2e3f4a5g":   false,
		"":                                       false,
	}
	for in, want := range cases {
		if got := CanonicalUUID(in); got != want {
			t.Errorf("CanonicalUUID(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestTable_Validate(t *testing.T) {
	cases := []struct {
		t    Table
		want string // "" = valid
	}{
		{Table{Name: "images", MemoryType: "image", URLColumn: "url", SizeColumn: "size_bytes"}, ""},
		{Table{Name: "app.images", MemoryType: "image", URLColumn: "url"}, ""},
		{Table{Name: "notes", MemoryType: "note"}, ""},
		{Table{Name: "Images", MemoryType: "image"}, "not a valid table name"},
		{Table{Name: "a.b.c", MemoryType: "image"}, "not a valid table name"},
		{Table{Name: "images", MemoryType: "picture"}, "not a memory type"},
		{Table{Name: "images", MemoryType: "image", URLColumn: "u rl"}, "not a valid column name"},
		{Table{Name: "images", MemoryType: "image", SizeColumn: "size"}, "size_column needs a url_column"},
	}
	for _, c := range cases {
		err := c.t.Validate()
		if c.want == "" && err != nil {
			t.Errorf("%+v: unexpected error %v", c.t, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: error %v, want one containing %q", c.t, err, c.want)
		}
	}
}

func TestValidateTables(t *testing.T) {
	if errs := ValidateTables(DefaultTables()); len(errs) != 0 {
		t.Fatalf("default tables: %v", errs)
	}
	dup := []Table{{Name: "images", MemoryType: "image"}, {Name: "public.images", MemoryType: "video"}, {Name: "pics", MemoryType: "image"}}
	errs := ValidateTables(dup)
	if len(errs) != 2 {
		t.Fatalf("want 2 problems (table twice, type twice), got %v", errs)
	}
	if errs := ValidateTables(nil); len(errs) != 1 {
		t.Fatalf("empty mapping: %v", errs)
	}
}

func TestQuoting(t *testing.T) {
	cases := map[string]string{
		"images":     `"public"."images"`,
		"app.images": `"app"."images"`,
		`we"ird`:     `"public"."we""ird"`,
	}
	for in, want := range cases {
		if got := QuoteQualified(in); got != want {
			t.Errorf("QuoteQualified(%q) = %s, want %s", in, got, want)
		}
	}
	if got := (Table{Name: "images"}).Qualified(); got != "public.images" {
		t.Errorf("Qualified = %s", got)
	}
}

func TestSubjects(t *testing.T) {
	s := Subjects{Prefix: "edgesync"}
	if got := s.Memory(MemoryImage, OpCreated); got != "edgesync.memory.image.created" {
		t.Error(got)
	}
	if got := s.Edge(BackendICP, OpUpdated); got != "edgesync.edge.icp-canister.updated" {
		t.Error(got)
	}
	for _, sub := range s.Stream() {
		if strings.Contains(sub, "admin") {
			t.Errorf("stream subject %s captures the admin subject", sub)
		}
	}
	if len(MemoryTypes()) != 5 || len(Backends()) != 3 || len(Artifacts()) != 2 || len(SyncStates()) != 3 || len(GalleryStatuses()) != 4 {
		t.Error("enum lists changed size: keep them equal to the SQL enums")
	}
}
