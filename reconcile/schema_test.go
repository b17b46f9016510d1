package reconcile

import (
	"context"
	"testing"

	"github.com/edgesync/edgesync/domain"
)

// TestService_AppSchema: with the memory tables in schema app
// (EDGESYNC_TABLES=app.images,app.notes) and namesakes in public holding
// other rows, a run repairs exactly the app's memories, under both ICP
// policies.
func TestService_AppSchema(t *testing.T) {
	for _, policy := range []string{PolicyKeep, PolicyDelete} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t)
			e.exec(`CREATE SCHEMA app`)
			e.exec(`CREATE TABLE app.images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id uuid NOT NULL, blob_url text, bytes bigint)`)
			e.exec(`CREATE TABLE app.notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), owner_id uuid NOT NULL)`)
			s := e.service(func(c *Config) {
				c.Tables = []domain.Table{
					{Name: "app.images", MemoryType: domain.MemoryImage, URLColumn: "blob_url", SizeColumn: "bytes"},
					{Name: "app.notes", MemoryType: domain.MemoryNote},
				}
				c.ICPEdgesOnDelete = policy
				c.ChunkSize = 2
			})
			id := func(q string) string { t.Helper(); return e.str(q) }
			img := id(`INSERT INTO app.images (owner_id, blob_url, bytes) VALUES (gen_random_uuid(), 'https://b.example/a', 3) RETURNING id::text`)
			drift := id(`INSERT INTO app.images (owner_id, blob_url, bytes) VALUES (gen_random_uuid(), 'https://b.example/new', 4) RETURNING id::text`)
			gone := id(`SELECT gen_random_uuid()::text`)
			note := id(`INSERT INTO app.notes (owner_id) VALUES (gen_random_uuid()) RETURNING id::text`)
			decoy := e.memory("images", "https://b.example/decoy", 1) // public.images
			e.web2(drift, "image", "https://b.example/old", 4)
			e.web2(gone, "image", "https://b.example/gone", 2)
			e.edge(edge{memoryID: gone, memoryType: "image", artifact: "metadata", backend: "icp-canister", present: true})

			run, err := s.RunNow(context.Background(), "cli", false, nil)
			if err != nil {
				t.Fatal(err)
			}
			orphans := int64(2)
			if policy == PolicyDelete {
				orphans = 3
			}
			wantReport(t, run.Report, Report{Missing: 3, Drift: 1, Orphans: orphans, Fixed: 4 + orphans})

			edges := func(id string) int64 {
				return e.int(`SELECT count(*) FROM storage_edges WHERE memory_id = $1::text::uuid`, id)
			}
			if n := edges(img); n != 2 {
				t.Errorf("app image has %d edges, want 2", n)
			}
			if n := edges(note); n != 1 {
				t.Errorf("app note has %d edges, want 1", n)
			}
			if n := edges(decoy); n != 0 {
				t.Errorf("the public.images decoy has %d edges, want 0", n)
			}
			if loc := e.str(`SELECT location FROM storage_edges WHERE memory_id = $1::text::uuid AND backend = 'vercel-blob'`, drift); loc != "https://b.example/new" {
				t.Errorf("drifted location %q", loc)
			}
			if n, want := edges(gone), map[string]int64{PolicyKeep: 1, PolicyDelete: 0}[policy]; n != want {
				t.Errorf("deleted memory keeps %d edges, want %d", n, want)
			}
			// A second run finds nothing: the repair is complete.
			run, err = s.RunNow(context.Background(), "cli", false, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantReport(t, run.Report, Report{})
		})
	}
}
