package cdc

import (
	"errors"
	"net"
	"testing"
	"time"
)

// chunkConn answers every read with up to n bytes (n < 0: the whole buffer),
// or err.
type chunkConn struct {
	net.Conn
	n   int
	err error
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.n < 0 || c.n > len(p) {
		return len(p), nil
	}
	return c.n, nil
}

// TestCoalescingConn: a read that found the socket nearly empty (fewer bytes
// than asked, and few) makes the next read wait at least trickleWait; a read
// that filled the buffer, a large read and a failed read do not.
func TestCoalescingConn(t *testing.T) {
	buf := make([]byte, 8192)
	under := &chunkConn{n: 300}
	c := &coalescingConn{Conn: under}
	if n, err := c.Read(buf); n != 300 || err != nil {
		t.Fatalf("read %d, %v; want the 300 bytes the connection had", n, err)
	}
	if !c.trickled {
		t.Fatal("a 300-byte read of an 8 KiB buffer did not mark the stream as trickling")
	}
	start := time.Now()
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < trickleWait {
		t.Errorf("the read after a trickle returned after %v, before the %v wait", waited, trickleWait)
	}

	for _, tc := range []struct {
		name string
		conn *chunkConn
	}{
		{"a read that fills the buffer", &chunkConn{n: -1}},
		{"a large read", &chunkConn{n: 6000}},
		{"a failed read", &chunkConn{err: errors.New("boom")}},
	} {
		c := &coalescingConn{Conn: tc.conn}
		_, _ = c.Read(buf)
		if c.trickled {
			t.Errorf("%s marked the stream as trickling", tc.name)
		}
	}
	// A small buffer filled by a small read is not a trickle either.
	c = &coalescingConn{Conn: &chunkConn{n: -1}}
	if _, _ = c.Read(buf[:100]); c.trickled {
		t.Error("a 100-byte buffer filled completely marked the stream as trickling")
	}
}
