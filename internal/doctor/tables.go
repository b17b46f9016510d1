package doctor

import (
	"github.com/edgesync/edgesync/cdc"
	"github.com/edgesync/edgesync/config"
)

// edgeColumns are the storage_edges columns an edge event carries.
var edgeColumns = []string{"id", "memory_id", "memory_type", "artifact", "backend", "present", "location",
	"content_hash", "size_bytes", "sync_state", "sync_error", "last_synced_at", "created_at", "updated_at"}

// PublishedTables are the tables the publication must carry for cfg, each
// with the columns edgesync reads from its changes: the memory tables (id and
// the mapped URL and size columns), gallery_items and storage_edges.
func PublishedTables(cfg config.Config) []cdc.PublishedTable {
	var out []cdc.PublishedTable
	for _, t := range cfg.Tables {
		cols := []string{"id"}
		if t.URLColumn != "" {
			cols = append(cols, t.URLColumn)
		}
		if t.SizeColumn != "" {
			cols = append(cols, t.SizeColumn)
		}
		out = append(out, cdc.PublishedTable{Name: t.Name, Columns: cols})
	}
	return append(out,
		cdc.PublishedTable{Name: "gallery_items", Columns: []string{"gallery_id", "memory_id", "memory_type"}},
		cdc.PublishedTable{Name: "storage_edges", Columns: edgeColumns})
}
