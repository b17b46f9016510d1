package icp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"go.uber.org/zap"
)

// UploadAsset stores the asset of uuid: size bytes read from r, whose SHA-256 is sha256Hex. It
// resumes an unfinished upload, sending only the chunks the canister lacks, and succeeds at once
// when the same content is already stored. progress, if not nil, is called with the bytes the
// canister holds so far (from different goroutines, one call at a time).
func (c *Client) UploadAsset(ctx context.Context, uuid string, r io.ReaderAt, size int64, sha256Hex string, progress func(done, total int64)) (Artifact, error) {
	report := func(int64) {}
	if progress != nil {
		var mu sync.Mutex
		var done int64
		report = func(n int64) {
			mu.Lock()
			defer mu.Unlock()
			done += n
			progress(done, size)
		}
	}
	stored := Artifact{ContentHash: sha256Hex, Size: uint64(size)}

	up, err := c.BeginAsset(ctx, uuid, size, sha256Hex)
	if err != nil {
		if err := sameContent(err, sha256Hex); err != nil {
			return Artifact{}, fmt.Errorf("upload asset: %w", err)
		}
		report(size)
		return stored, nil
	}
	if up.TotalSize != uint64(size) || up.ChunkSize != uint32(c.chunkSize) {
		return Artifact{}, fmt.Errorf("upload asset %s: canister answered an upload of %d bytes in %d-byte chunks; asked for %d in %d",
			uuid, up.TotalSize, up.ChunkSize, size, c.chunkSize)
	}
	missing, held := missingChunks(up)
	report(held)
	c.log.Debug("upload asset", zap.String("uuid", uuid), zap.Int64("size", size),
		zap.Uint32("chunks", up.ChunkCount), zap.Int("missing", len(missing)))

	if err := c.putChunks(ctx, uuid, r, up, missing, report); err != nil {
		return Artifact{}, fmt.Errorf("upload asset %s: %w", uuid, err)
	}
	a, err := c.CommitAsset(ctx, uuid)
	if err != nil {
		if err := sameContent(err, sha256Hex); err != nil {
			return Artifact{}, fmt.Errorf("upload asset: %w", err)
		}
		return stored, nil
	}
	return a, nil
}

// missingChunks lists the chunk indexes of up that the canister does not hold yet, and counts the
// bytes of those it does hold.
func missingChunks(up Upload) (missing []uint32, heldBytes int64) {
	held := make(map[uint32]bool, len(up.Received))
	for _, i := range up.Received {
		if i < up.ChunkCount && !held[i] {
			held[i] = true
			heldBytes += chunkLen(up, i)
		}
	}
	for i := uint32(0); i < up.ChunkCount; i++ {
		if !held[i] {
			missing = append(missing, i)
		}
	}
	return missing, heldBytes
}

// chunkLen is the length of chunk i: ChunkSize, except for a short last chunk.
func chunkLen(up Upload, i uint32) int64 {
	off := int64(i) * int64(up.ChunkSize)
	return min(int64(up.ChunkSize), int64(up.TotalSize)-off)
}

// putChunks sends the missing chunks with up to c.parallelism calls in flight and returns the first
// error, after the calls already in flight have ended.
func (c *Client) putChunks(ctx context.Context, uuid string, r io.ReaderAt, up Upload, missing []uint32, report func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan uint32)
	var wg sync.WaitGroup
	for range min(c.parallelism, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, up.ChunkSize)
			for i := range next {
				n, err := c.sendChunk(ctx, uuid, r, up, i, buf)
				if err != nil {
					cancel(err)
					return
				}
				report(int64(n))
			}
		}()
	}
feed:
	for _, i := range missing {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

func (c *Client) sendChunk(ctx context.Context, uuid string, r io.ReaderAt, up Upload, i uint32, buf []byte) (int, error) {
	off := int64(i) * int64(up.ChunkSize)
	n := int(chunkLen(up, i))
	// ReaderAt may report io.EOF along with a full read of the last bytes.
	if m, err := r.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && m == n) {
		return 0, fmt.Errorf("read chunk %d at offset %d: %w", i, off, err)
	}
	if _, err := c.PutChunk(ctx, uuid, i, buf[:n]); err != nil {
		return 0, err
	}
	return n, nil
}
