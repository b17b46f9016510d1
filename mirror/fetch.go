package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// errNotHTTP says an asset URL is not an absolute http(s) URL.
var errNotHTTP = errors.New("not an http(s) URL")

// errStalled is the cause of a download cancelled because no byte arrived for the fetch timeout.
var errStalled = errors.New("no data for the fetch timeout")

// FetchError says why an asset could not be downloaded, in the terms the mirror needs to decide
// between retrying and giving up, and to tell a person what to do.
type FetchError struct {
	URL      string
	Status   int  // the HTTP status of a non-2xx answer; 0 otherwise
	Timeout  bool // no answer, or no data, for the fetch timeout
	TooLarge bool // the asset is larger than the limit
	Size     int64
	Limit    int64
	Err      error
}

func (e *FetchError) Error() string {
	switch {
	case e.Status != 0:
		return fmt.Sprintf("get %s: answered %d", redactURL(e.URL), e.Status)
	case e.TooLarge:
		return fmt.Sprintf("get %s: asset of %d bytes exceeds the limit of %d", redactURL(e.URL), e.Size, e.Limit)
	default:
		return fmt.Sprintf("get %s: %v", redactURL(e.URL), e.Err)
	}
}

func (e *FetchError) Unwrap() error { return e.Err }

// memBlobMax is the largest asset kept in memory rather than in a temporary file: small files
// are most memories, and a file per memory costs more than the upload on a fast link. Workers
// bound the memory used: at most Workers × memBlobMax.
const memBlobMax = 4 << 20

// spoolBufferSize is a copy buffer of a spooled download. io.Copy's 32 KiB would make a 50 MiB
// asset cost 1,600 file writes; on ext4 those took half as long as the download itself
// (BenchmarkMirror's profile), 1 MiB writes next to nothing.
const spoolBufferSize = 1 << 20

// spoolBuffersPerFetch is how many copy buffers one spooled download cycles through: one being
// filled and written while the others wait to be hashed.
const spoolBuffersPerFetch = 3

// spoolBuffers recycles the copy buffers of spooled downloads: spoolBuffersPerFetch per running
// download.
var spoolBuffers = sync.Pool{New: func() any { b := make([]byte, spoolBufferSize); return &b }}

// spool copies src to dst and hashes it into h on a second goroutine. begin_asset needs the
// SHA-256, so the whole download comes before the upload; hashing beside the receiving and
// writing, on another core, shortens that wait by most of the hash (about 30 ms per 50 MiB).
func spool(dst io.Writer, src io.Reader, h hash.Hash) (int64, error) {
	free := make(chan *[]byte, spoolBuffersPerFetch)
	for range spoolBuffersPerFetch {
		free <- spoolBuffers.Get().(*[]byte)
	}
	type filled struct {
		buf *[]byte
		n   int
	}
	work := make(chan filled, spoolBuffersPerFetch)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for f := range work {
			h.Write((*f.buf)[:f.n]) // a hash.Hash never fails
			free <- f.buf
		}
	}()
	var total int64
	var err error
	for err == nil {
		buf := <-free
		var n int
		n, err = src.Read(*buf)
		if n > 0 {
			if _, werr := dst.Write((*buf)[:n]); werr != nil {
				err = werr
			}
			total += int64(n)
		}
		work <- filled{buf, n} // every buffer goes through the hasher, back to free
	}
	close(work)
	<-hashed
	for range spoolBuffersPerFetch {
		spoolBuffers.Put(<-free)
	}
	if err == io.EOF {
		err = nil
	}
	return total, err
}

// blob is a downloaded asset, in memory or in a temporary file, with its size and SHA-256.
type blob struct {
	io.ReaderAt
	file *os.File // nil when in memory
	size int64
	hash string
}

// Close removes the temporary file, if any.
func (b *blob) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	if rmErr := os.Remove(b.file.Name()); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// fetcher downloads assets from the blob store.
type fetcher struct {
	client  *http.Client
	policy  *hostPolicy
	timeout time.Duration // time to the answer, and longest pause between bytes
	max     int64
	dir     string
}

// fetch downloads rawURL, into memory when the answer says it is small and into a temporary file
// otherwise, while hashing it. The timeout bounds stalls, not
// the whole download: a 64 MiB video on a slow link may take long but must keep moving.
func (f *fetcher) fetch(ctx context.Context, rawURL string) (*blob, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &FetchError{URL: rawURL, Err: errNotHTTP}
	}
	if err := f.policy.allowedURL(u, false); err != nil {
		return nil, &FetchError{URL: rawURL, Err: err}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(f.timeout, func() { cancel(errStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, &FetchError{URL: rawURL, Err: err}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failed(ctx, rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so the connection can be reused; the body of an error page is not needed.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		return nil, &FetchError{URL: rawURL, Status: resp.StatusCode}
	}
	if resp.ContentLength > f.max {
		return nil, &FetchError{URL: rawURL, TooLarge: true, Size: resp.ContentLength, Limit: f.max}
	}

	h := sha256.New()
	body := &stallReader{r: io.LimitReader(resp.Body, f.max+1), timer: stall, timeout: f.timeout}
	if resp.ContentLength >= 0 && resp.ContentLength <= memBlobMax {
		buf := bytes.NewBuffer(make([]byte, 0, resp.ContentLength))
		if _, err := io.Copy(io.MultiWriter(buf, h), body); err != nil {
			return nil, f.failed(ctx, rawURL, err)
		}
		return &blob{ReaderAt: bytes.NewReader(buf.Bytes()), size: int64(buf.Len()), hash: hex.EncodeToString(h.Sum(nil))}, nil
	}

	file, err := os.CreateTemp(f.dir, spoolPattern)
	if err != nil {
		return nil, fmt.Errorf("asset spool file: %w", err)
	}
	b := &blob{ReaderAt: file, file: file}
	n, err := spool(file, body, h)
	switch {
	case err != nil:
		_ = b.Close()
		return nil, f.failed(ctx, rawURL, err)
	case n > f.max:
		_ = b.Close()
		return nil, &FetchError{URL: rawURL, TooLarge: true, Size: n, Limit: f.max}
	}
	b.size = n
	b.hash = hex.EncodeToString(h.Sum(nil))
	return b, nil
}

// failed classifies a transport error: a stall or a client timeout is a Timeout, the rest is
// passed on (connection refused, reset, TLS).
func (f *fetcher) failed(ctx context.Context, rawURL string, err error) *FetchError {
	if errors.Is(context.Cause(ctx), errStalled) {
		return &FetchError{URL: rawURL, Timeout: true, Err: fmt.Errorf("%w (%s)", errStalled, f.timeout)}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &FetchError{URL: rawURL, Timeout: true, Err: err}
	}
	return &FetchError{URL: rawURL, Err: err}
}

// stallReader re-arms the stall timer whenever bytes arrive.
type stallReader struct {
	r       io.Reader
	timer   *time.Timer
	timeout time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.timeout)
	}
	return n, err
}

// redactURL drops the query and user info: signed blob URLs carry their token in the query.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}
