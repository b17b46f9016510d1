package prodtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// change_log records, in the same transaction, every change the workload
// makes (it is not in the publication), so the expected events are known
// exactly whatever happens to the daemon, NATS or Postgres. seq is taken
// after the row's lock, so per memory it follows commit order even with
// several writers. lsn is the WAL insert position just before the commit: the
// slot is past the change once confirmed_flush_lsn > lsn.
const changeLogDDL = `CREATE TABLE IF NOT EXISTS change_log (seq bigint PRIMARY KEY, memory_id uuid NOT NULL, op text NOT NULL, token text, lsn pg_lsn)`

// workload writes memory changes: inserts of images (with a blob URL) and
// notes, URL updates (sometimes to null) and deletes.
type workload struct {
	pool    *pgxpool.Pool
	seq     atomic.Int64
	mu      sync.Mutex
	ids     []string // live image ids
	commits atomic.Int64
	errors  atomic.Int64
	bodyLen int // note body size in bytes
}

func (w *workload) token() string { return fmt.Sprintf("t%d", w.seq.Add(1)) }

func (w *workload) step(ctx context.Context, r *rand.Rand) error {
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		logc := func(id, op, token string) error {
			_, err := tx.Exec(ctx, `INSERT INTO change_log (seq, memory_id, op, token, lsn) VALUES ($1, $2, $3, $4, pg_current_wal_insert_lsn())`, w.seq.Add(1), id, op, token)
			return err
		}
		w.mu.Lock()
		n := len(w.ids)
		w.mu.Unlock()
		switch k := r.IntN(10); {
		case k < 5 || n < 10: // insert three images and a note
			for i := 0; i < 3; i++ {
				t := w.token()
				var id string
				if err := tx.QueryRow(ctx, `INSERT INTO images (owner_id, title, url, size_bytes) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id::text`,
					t, "https://blob.example/"+t+".jpg", r.IntN(1<<20)).Scan(&id); err != nil {
					return err
				}
				if err := logc(id, "created", t); err != nil {
					return err
				}
				defer func() { w.mu.Lock(); w.ids = append(w.ids, id); w.mu.Unlock() }()
			}
			t := w.token()
			var id string
			body := "b"
			if w.bodyLen > 0 {
				body = strings.Repeat("x", w.bodyLen)
			}
			if err := tx.QueryRow(ctx, `INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), $1, $2) RETURNING id::text`, t, body).Scan(&id); err != nil {
				return err
			}
			return logc(id, "created", t)
		case k < 8: // update the URL (sometimes to null)
			w.mu.Lock()
			id := w.ids[r.IntN(n)]
			w.mu.Unlock()
			t := w.token()
			var url *string
			if k < 7 {
				s := "https://blob.example/" + t + ".jpg"
				url = &s
			}
			tag, err := tx.Exec(ctx, `UPDATE images SET title = $2, url = $3 WHERE id = $1`, id, t, url)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return logc(id, "updated", t)
		default: // delete
			w.mu.Lock()
			i := r.IntN(n)
			id := w.ids[i]
			w.ids = append(w.ids[:i], w.ids[i+1:]...)
			w.mu.Unlock()
			tag, err := tx.Exec(ctx, `DELETE FROM images WHERE id = $1`, id)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return logc(id, "deleted", "")
		}
	})
}

// insertNote inserts one note with a body of n bytes, logged.
func (w *workload) insertNote(ctx context.Context, n int) error {
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		t := w.token()
		var id string
		if err := tx.QueryRow(ctx, `INSERT INTO notes (owner_id, title, body) VALUES (gen_random_uuid(), $1, $2) RETURNING id::text`, t, strings.Repeat("n", n)).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO change_log (seq, memory_id, op, token, lsn) VALUES ($1, $2, 'created', $3, pg_current_wal_insert_lsn())`, w.seq.Add(1), id, t)
		return err
	})
}

// writes runs writers until stop is called; each waits pause between
// transactions (0: as fast as it can). Errors (Postgres paused, say) are
// retried: the log keeps only what committed.
type writes struct {
	w      *workload
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startWrites(pool *pgxpool.Pool, writers int, pause time.Duration, seed uint64, bodyLen int) *writes {
	ctx, cancel := context.WithCancel(context.Background())
	ws := &writes{w: &workload{pool: pool, bodyLen: bodyLen}, cancel: cancel}
	for i := 0; i < writers; i++ {
		ws.wg.Add(1)
		go func(i int) {
			defer ws.wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			for ctx.Err() == nil {
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				err := ws.w.step(sctx, r)
				scancel()
				if err != nil {
					ws.w.errors.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				ws.w.commits.Add(1)
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}(i)
	}
	return ws
}

// stop ends the writes and waits for the writers.
func (ws *writes) stop() { ws.cancel(); ws.wg.Wait() }

// commits is the number of committed transactions.
func (ws *writes) commits() int64 { return ws.w.commits.Load() }
