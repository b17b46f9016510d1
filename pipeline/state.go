package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgesync/edgesync/cdc"
)

// state is the pipeline's row of edgesync_pipeline_state.
type state struct {
	ConfirmedLSN  cdc.LSN
	SnapshotState string // pending, running, done
	SnapshotTable string
	SnapshotAfter string
	SnapshotEdges int64
}

func loadState(ctx context.Context, pool *pgxpool.Pool, slot string) (state, error) {
	var s state
	var lsn, table, after *string
	err := pool.QueryRow(ctx, `SELECT confirmed_lsn::text, snapshot_state, snapshot_table, snapshot_after::text, snapshot_edges
		FROM edgesync_pipeline_state WHERE slot = $1`, slot).Scan(&lsn, &s.SnapshotState, &table, &after, &s.SnapshotEdges)
	if errors.Is(err, pgx.ErrNoRows) {
		return state{SnapshotState: "pending"}, nil
	}
	if err != nil {
		return s, fmt.Errorf("read pipeline state (did `edgesync migrate` run?): %w", err)
	}
	if lsn != nil {
		s.ConfirmedLSN, _ = parseLSN(*lsn)
	}
	s.SnapshotTable, s.SnapshotAfter = deref(table), deref(after)
	return s, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func resetState(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	_, err := pool.Exec(ctx, `DELETE FROM edgesync_pipeline_state WHERE slot = $1`, slot)
	return err
}

func markSlotCreated(ctx context.Context, pool *pgxpool.Pool, slot string, at cdc.LSN) error {
	_, err := pool.Exec(ctx, `INSERT INTO edgesync_pipeline_state (slot, confirmed_lsn, snapshot_state, slot_created_at, updated_at)
		VALUES ($1, $2::pg_lsn, 'running', now(), now())
		ON CONFLICT (slot) DO UPDATE SET confirmed_lsn = excluded.confirmed_lsn, snapshot_state = 'running',
			snapshot_table = NULL, snapshot_after = NULL, snapshot_edges = 0, slot_created_at = now(), updated_at = now()`, slot, at.String())
	return err
}

func saveSnapshotProgress(ctx context.Context, pool *pgxpool.Pool, slot, table, after string, created int64) error {
	_, err := pool.Exec(ctx, `INSERT INTO edgesync_pipeline_state (slot, snapshot_state, snapshot_table, snapshot_after, snapshot_edges, updated_at)
		VALUES ($1, 'running', $2, NULLIF($3, '')::uuid, $4, now())
		ON CONFLICT (slot) DO UPDATE SET snapshot_state = 'running', snapshot_table = $2, snapshot_after = NULLIF($3, '')::uuid,
			snapshot_edges = edgesync_pipeline_state.snapshot_edges + $4, updated_at = now()`, slot, table, after, created)
	return err
}

func markSnapshotDone(ctx context.Context, pool *pgxpool.Pool, slot string) (int64, error) {
	var n int64
	// An upsert: a resumed snapshot of empty tables saved no progress, and
	// the row may be missing altogether (deleted by hand while the slot
	// stayed); an UPDATE would find nothing and fail every restart.
	err := pool.QueryRow(ctx, `INSERT INTO edgesync_pipeline_state (slot, snapshot_state, updated_at) VALUES ($1, 'done', now())
		ON CONFLICT (slot) DO UPDATE SET snapshot_state = 'done', snapshot_table = NULL, snapshot_after = NULL, updated_at = now()
		RETURNING snapshot_edges`, slot).Scan(&n)
	return n, err
}

func saveConfirmed(ctx context.Context, pool *pgxpool.Pool, slot string, lsn cdc.LSN) error {
	_, err := pool.Exec(ctx, `UPDATE edgesync_pipeline_state SET confirmed_lsn = $2::pg_lsn, updated_at = now()
		WHERE slot = $1 AND (confirmed_lsn IS NULL OR confirmed_lsn < $2::pg_lsn)`, slot, lsn.String())
	return err
}
