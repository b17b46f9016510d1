package icp_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go"
	"go.uber.org/zap"

	"github.com/edgesync/edgesync/icp"
	"github.com/edgesync/edgesync/internal/icpreplica"
)

// BenchmarkUpload measures what one iteration moves: a 50 MiB asset and 50 small memories
// (1 KiB metadata and a 100 KiB asset each), through the Client and, as the yardstick, through a
// bare agent-go Call loop sending the same calls with agent-go's generic Candid encoding. Run it
// with:
//
//	go test -run '^$' -bench BenchmarkUpload -benchtime 3x ./icp/
func BenchmarkUpload(b *testing.B) {
	big, bigHash := asset(50<<20, 10)
	smallAsset, smallHash := asset(100<<10, 11)
	meta := bytes.Repeat([]byte(`{"k":"v"}`), 1024/9)
	perOp := int64(len(big) + 50*(len(meta)+len(smallAsset)))
	r := icpreplica.StartTest(b, icpreplica.Config{})
	ctx := context.Background()

	mbps := map[string]float64{}
	run := func(name string, upload func(b *testing.B, seq int)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(perOp)
			for i := range b.N {
				// Each iteration starts from an empty canister, so memory stays bounded.
				b.StopTimer()
				if err := r.Restart(false); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				upload(b, i)
			}
			mbps[name] = float64(perOp) * float64(b.N) / b.Elapsed().Seconds() / 1e6
			if base := mbps["agent-go"]; name != "agent-go" && base > 0 {
				b.ReportMetric(mbps[name]/base, "x-agent-go") // the ratio to the yardstick
			}
		})
	}
	client := func(parallelism int) func(b *testing.B, seq int) {
		return func(b *testing.B, seq int) {
			c, err := icp.New(icp.Config{URL: r.URL(), CanisterID: r.CanisterID().String(), FetchRootKey: true,
				Parallelism: parallelism, CallTimeout: time.Minute}, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.UploadAsset(ctx, benchUUID(seq, 0), bytes.NewReader(big), int64(len(big)), bigHash, nil); err != nil {
				b.Fatal(err)
			}
			for j := 1; j <= 50; j++ {
				id := benchUUID(seq, j)
				if _, err := c.PutMetadata(ctx, id, meta); err != nil {
					b.Fatal(err)
				}
				if _, err := c.UploadAsset(ctx, id, bytes.NewReader(smallAsset), int64(len(smallAsset)), smallHash, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	run("agent-go", func(b *testing.B, seq int) {
		a := bareAgentB(b, r)
		bareUpload(b, a, r, benchUUID(seq, 0), big, bigHash)
		for j := 1; j <= 50; j++ {
			id := benchUUID(seq, j)
			var res icp.Result[icp.Artifact]
			if err := a.Call(r.CanisterID(), icp.MethodPutMetadata, []any{id, meta}, []any{&res}); err != nil || res.Ok == nil {
				b.Fatalf("put_metadata: %+v, %v", res, err)
			}
			bareUpload(b, a, r, id, smallAsset, smallHash)
		}
	})
	run("client", client(icp.DefaultParallelism))
	run("client-sequential", client(1))
	if base := mbps["agent-go"]; base > 0 { // shown with -v; the x-agent-go metric carries it otherwise
		b.Logf("MB/s: client %.1f, client-sequential %.1f, agent-go %.1f; client/agent-go = %.2fx, sequential/agent-go = %.2fx",
			mbps["client"], mbps["client-sequential"], base, mbps["client"]/base, mbps["client-sequential"]/base)
	}
}

func benchUUID(seq, j int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", seq, j)
}

func bareAgentB(b *testing.B, r *icpreplica.Replica) *agent.Agent {
	b.Helper()
	u, err := url.Parse(r.URL())
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(agent.Config{FetchRootKey: true, ClientConfig: []agent.ClientOption{agent.WithHostURL(u)}})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// bareUpload is the yardstick: the same calls UploadAsset makes, one at a time, through
// agent.Call with generic Candid.
func bareUpload(b *testing.B, a *agent.Agent, r *icpreplica.Replica, id string, data []byte, hash string) {
	b.Helper()
	var up icp.Result[icp.Upload]
	if err := a.Call(r.CanisterID(), icp.MethodBeginAsset, []any{id, uint64(len(data)), hash, uint32(icp.ChunkSize)}, []any{&up}); err != nil || up.Ok == nil {
		b.Fatalf("begin_asset: %+v, %v", up, err)
	}
	for i := 0; i*icp.ChunkSize < len(data); i++ {
		chunk := data[i*icp.ChunkSize : min((i+1)*icp.ChunkSize, len(data))]
		var held icp.Result[uint32]
		if err := a.Call(r.CanisterID(), icp.MethodPutChunk, []any{id, uint32(i), chunk}, []any{&held}); err != nil || held.Ok == nil {
			b.Fatalf("put_chunk: %+v, %v", held, err)
		}
	}
	var done icp.Result[icp.Artifact]
	if err := a.Call(r.CanisterID(), icp.MethodCommitAsset, []any{id}, []any{&done}); err != nil || done.Ok == nil {
		b.Fatalf("commit_asset: %+v, %v", done, err)
	}
}
