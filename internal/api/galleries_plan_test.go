package api

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// explain returns the plan the planner chooses for q on db, line by line.
func explain(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	return plan
}

// TestGalleryList_Plans: a status-filtered page is a range scan of
// ix_gallery_status_list in the list's order (no sort of every gallery), an
// unfiltered page one of ix_galleries_created, both with the cursor as an
// index condition. (A title filter alone may be served either way: the
// planner sorts the matching galleries when it expects few.)
func TestGalleryList_Plans(t *testing.T) {
	e := newEnv(t, nil)
	// Enough galleries, with statistics, that the planner weighs a page
	// against a sort of all of them as it would in production.
	e.exec(`INSERT INTO galleries (owner_id, title, created_at)
		SELECT gen_random_uuid(), 'g' || i, now() - i * interval '1 minute' FROM generate_series(1, 20000) i`)
	e.exec(`INSERT INTO edgesync_gallery_status (gallery_id, status, total_memories, icp_complete_memories, icp_any, version, gallery_created_at)
		SELECT id, (ARRAY['empty', 'web2_only', 'partial', 'stored_forever'])[1 + abs(hashtext(id::text)) % 4], 1, 0, false, 1, created_at
		FROM galleries`)
	e.exec(`ANALYZE galleries`)
	e.exec(`ANALYZE edgesync_gallery_status`)
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	id := "10000000-0000-0000-0000-000000000001"
	for _, tc := range []struct {
		name, status, title, after string
		index                      string
	}{
		{"status, first page", "partial", "", "", "ix_gallery_status_list"},
		{"status, next page", "partial", "", id, "ix_gallery_status_list"},
		{"status and title", "empty", "trip", id, "ix_gallery_status_list"},
		{"all, first page", "", "", "", "ix_galleries_created"},
		{"all, next page", "", "", id, "ix_galleries_created"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, args := galleryListQuery(tc.status, tc.title, at, tc.after, 51)
			plan := strings.Join(explain(t, e.pool, q, args...), "\n")
			if !strings.Contains(plan, "Index Scan using "+tc.index) || strings.Contains(plan, "Sort Key: g.created_at") || strings.Contains(plan, "Sort Key: s.gallery_created_at") {
				t.Fatalf("the page is not an ordered range scan of %s:\n%s", tc.index, plan)
			}
			if tc.after != "" && !regexp.MustCompile(`Index Cond: .*ROW\((gallery_)?created_at, `).MatchString(plan) {
				t.Fatalf("the cursor is no index condition:\n%s", plan)
			}
		})
	}
}
