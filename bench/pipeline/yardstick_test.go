package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgesync/edgesync/internal/natstest"
)

// published is what edgesync put into the stream.
type published struct {
	n, ids               int
	meanData, meanHeader int
}

// streamStats reads every message of the stream once: the count, the mean
// body and header sizes, and how many distinct Nats-Msg-Ids there are (it
// fails unless every message has its own).
func streamStats(b *testing.B, js jetstream.JetStream, name string, want uint64) published {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"edgesync.memory.>", "edgesync.edge.>"}})
	if err != nil {
		b.Fatal(err)
	}
	ids := make(map[string]struct{}, want)
	var data, hdr int
	var p published
	for uint64(p.n) < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		k := 0
		for m := range batch.Messages() {
			k++
			p.n++
			data += len(m.Data())
			for key, vs := range m.Headers() {
				for _, v := range vs {
					hdr += len(key) + len(v) + 4 // "key: value\r\n"
				}
			}
			ids[m.Headers().Get(jetstream.MsgIDHeader)] = struct{}{}
		}
		if err := batch.Error(); err != nil {
			b.Fatal(err)
		}
		if k == 0 {
			b.Fatalf("read %d of %d messages of %s, then nothing more", p.n, want, name)
		}
	}
	p.ids = len(ids)
	if p.ids != p.n {
		b.Fatalf("%d messages but %d distinct Nats-Msg-Ids", p.n, p.ids)
	}
	p.meanData, p.meanHeader = data/p.n, hdr/p.n
	return p
}

// plainResult is the three plain parts, run side by side.
type plainResult struct {
	wall, decode, sql, publish time.Duration
	sqlRows                    int64
	published                  int
}

// plainParts runs, at the same time, pg_recvlogical of the load (from the
// slot copied where the daemon's slot started), the edge writes as
// set-based SQL and the minimal JetStream publisher, and times each and the
// whole.
func plainParts(b *testing.B, pool *pgxpool.Pool, pgCPU func() time.Duration, dbURL, end string, ns *natstest.Server, pub published) plainResult {
	b.Helper()
	ctx := context.Background()
	// Setup first, untimed: the scratch table and stream, the publisher's
	// connection and payload.
	mustExec(b, pool, `CREATE TABLE scratch_edges (LIKE storage_edges INCLUDING ALL);
CREATE TRIGGER scratch_edges_updated_at BEFORE UPDATE ON scratch_edges FOR EACH ROW EXECUTE FUNCTION storage_edges_touch_updated_at();
CHECKPOINT`)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var pubErrs atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { pubErrs.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	scratch, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"},
		Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	// Most of the stream's messages are edge events; the subject is of the
	// same length as edgesync's.
	subjects := []string{"scratch.memory.image.created", "scratch.edge.neon-db.created", "scratch.edge.vercel-blob.created"}
	body := []byte(strings.Repeat("x", pub.meanData))
	// Headers of edgesync's messages other than the msg id, padded to size.
	pad := max(0, pub.meanHeader-len(jetstream.MsgIDHeader)-len("edgesync/0/1A2B3C4D/100")-8-len("Content-Type")-len("application/json"))

	cpu0, self0 := pgCPU(), selfCPU()
	var r plainResult
	var errDecode, errSQL error
	var wg sync.WaitGroup
	wg.Add(3)
	start := time.Now()
	go func() {
		defer wg.Done()
		r.decode, errDecode = recvlogical(dbURL, end)
	}()
	go func() {
		defer wg.Done()
		r.sql, r.sqlRows, errSQL = plainSQL(pool)
	}()
	go func() {
		defer wg.Done()
		t := time.Now()
		for i := 0; i < pub.n; i++ {
			m := nats.NewMsg(subjects[i%len(subjects)])
			m.Data = body
			m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("edgesync/0/%08X/%d", i/100, i%100))
			m.Header.Set("Content-Type", "application/json")
			if pad > 0 {
				m.Header.Set("X-Pad", strings.Repeat("p", pad))
			}
			// A full window blocks the publisher (as edgesync's does).
			if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				pubErrs.Add(1)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			pubErrs.Add(1)
		}
		r.publish = time.Since(t)
		r.published = pub.n
	}()
	wg.Wait()
	r.wall = time.Since(start)
	if errDecode != nil || errSQL != nil {
		b.Fatal(errors.Join(errDecode, errSQL))
	}
	info, err := scratch.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if n := pubErrs.Load(); n > 0 || info.State.Msgs != uint64(pub.n) {
		b.Fatalf("the publisher yardstick stored %d of %d messages (%d errors)", info.State.Msgs, pub.n, n)
	}
	mustExec(b, pool, `SELECT pg_drop_replication_slot('bench_decode')`)
	fmt.Printf("pipeline bench: plain parts side by side: %.3f s wall (pg_recvlogical %.3f s, SQL %.3f s, %d publishes %.3f s); CPU: Postgres %.2f s, bench process (NATS server + publisher) %.2f s\n",
		r.wall.Seconds(), r.decode.Seconds(), r.sql.Seconds(), r.published, r.publish.Seconds(), (pgCPU() - cpu0).Seconds(), (selfCPU() - self0).Seconds())
	return r
}
