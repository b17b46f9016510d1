package domain

import (
	"fmt"
	"regexp"
	"strings"
)

// The tables edgesync itself relies on. EdgesTable is created by its
// migrations; the gallery tables belong to the app.
const (
	EdgesTable        = "storage_edges"
	GalleryItemsTable = "gallery_items"
	GalleriesTable    = "galleries"
	DefaultSchema     = "public"
)

// Table maps one app table (primary key "id", uuid) to a memory type.
// URLColumn is empty for types without an asset (notes); SizeColumn is
// optional. Name may be schema-qualified ("app.images"); unqualified names
// are in DefaultSchema.
type Table struct {
	Name       string `yaml:"table"`
	MemoryType string `yaml:"memory_type"`
	URLColumn  string `yaml:"url_column"`
	SizeColumn string `yaml:"size_column"`
}

// DefaultTables is the mapping of the reference app schema.
func DefaultTables() []Table {
	return []Table{
		{Name: "images", MemoryType: MemoryImage, URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "videos", MemoryType: MemoryVideo, URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "notes", MemoryType: MemoryNote},
		{Name: "documents", MemoryType: MemoryDocument, URLColumn: "url", SizeColumn: "size_bytes"},
		{Name: "audio", MemoryType: MemoryAudio, URLColumn: "url", SizeColumn: "size_bytes"},
	}
}

// HasAsset reports whether the memory type of t has an asset file.
func (t Table) HasAsset() bool { return t.URLColumn != "" }

// Schema is the table's schema (DefaultSchema when unqualified).
func (t Table) Schema() string {
	s, _ := SplitQualified(t.Name)
	return s
}

// Qualified is "schema.table", the form pgoutput's Relation messages and
// pg_publication_tables use.
func (t Table) Qualified() string { return Qualify(t.Name) }

// Ident is the table's quoted SQL identifier ("schema"."table").
func (t Table) Ident() string { return QuoteQualified(t.Name) }

// Validate checks the one rule of a mapping entry; the error names the
// problem (callers add the setting's name).
func (t Table) Validate() error {
	var probs []string
	if !ValidQualified(t.Name) {
		probs = append(probs, fmt.Sprintf("%q is not a valid table name (lower-case, optionally schema.table)", t.Name))
	}
	if !IsMemoryType(t.MemoryType) {
		probs = append(probs, fmt.Sprintf("table %s: %q is not a memory type (%s)", t.Name, t.MemoryType, strings.Join(MemoryTypes(), ", ")))
	}
	if t.URLColumn != "" && !ValidIdent(t.URLColumn) {
		probs = append(probs, fmt.Sprintf("table %s: %q is not a valid column name", t.Name, t.URLColumn))
	}
	if t.SizeColumn != "" && !ValidIdent(t.SizeColumn) {
		probs = append(probs, fmt.Sprintf("table %s: %q is not a valid column name", t.Name, t.SizeColumn))
	}
	if t.SizeColumn != "" && t.URLColumn == "" {
		probs = append(probs, fmt.Sprintf("table %s: size_column needs a url_column", t.Name))
	}
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(probs, "; "))
}

// ValidateTables checks a whole mapping: each entry, no table twice, each
// memory type at most once, at least one table. It returns every problem.
func ValidateTables(ts []Table) []error {
	var errs []error
	if len(ts) == 0 {
		errs = append(errs, fmt.Errorf("at least one memory table is needed (e.g. images=image:url:size_bytes,notes=note)"))
	}
	seenTable := map[string]bool{}
	seenType := map[string]bool{}
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			errs = append(errs, err)
		}
		if seenTable[t.Qualified()] {
			errs = append(errs, fmt.Errorf("table %s is listed twice", t.Name))
		}
		if seenType[t.MemoryType] {
			errs = append(errs, fmt.Errorf("memory type %s is mapped to two tables; each type needs exactly one", t.MemoryType))
		}
		seenTable[t.Qualified()], seenType[t.MemoryType] = true, true
	}
	return errs
}

// TableFor returns the table mapped to a memory type.
func TableFor(ts []Table, memoryType string) (Table, bool) {
	for _, t := range ts {
		if t.MemoryType == memoryType {
			return t, true
		}
	}
	return Table{}, false
}

var (
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	qualRe  = regexp.MustCompile(`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$`)
)

// ValidIdent reports whether s is a plain lower-case SQL identifier that can
// be used unquoted (slot, publication, column names).
func ValidIdent(s string) bool { return identRe.MatchString(s) }

// ValidQualified reports whether s is an identifier, optionally
// schema-qualified ("schema.table").
func ValidQualified(s string) bool { return qualRe.MatchString(s) }

// SplitQualified splits "schema.table" (DefaultSchema when unqualified).
func SplitQualified(name string) (schema, table string) {
	if s, t, ok := strings.Cut(name, "."); ok {
		return s, t
	}
	return DefaultSchema, name
}

// Qualify returns "schema.table" for a possibly unqualified name.
func Qualify(name string) string {
	s, t := SplitQualified(name)
	return s + "." + t
}

// QuoteIdent quotes one SQL identifier (doubling embedded quotes), the way
// pgx.Identifier does.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `"`, `""`), "\x00", "") + `"`
}

// QuoteQualified quotes a possibly schema-qualified name as
// "schema"."table". It is the one quoting function for table names.
func QuoteQualified(name string) string {
	s, t := SplitQualified(name)
	return QuoteIdent(s) + "." + QuoteIdent(t)
}
