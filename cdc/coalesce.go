package cdc

import (
	"net"
	"time"
)

// A walsender flushes every message as it decodes it. While the reader keeps
// up, each read of the replication socket returns one message of a few
// hundred bytes, and the reader's goroutine parks and wakes once per change:
// with two pipelines on two cores (each walsender decoding the whole WAL)
// that cost each daemon about twice the CPU of the work itself, which slowed
// the walsenders further, so the daemons stayed in that mode for the rest of
// the run (one of the two causes of bench/scaleout's slow mode, 15-18 s
// instead of 11 s on the same code; the other was StoredFrom's search).
//
// coalescingConn breaks that loop: after a read that emptied the socket with
// little data, the next read waits trickleWait first, so a trickle of
// messages is read a millisecond's worth at a time. A backlog (reads that
// fill the buffer) is read without waiting, and an idle stream adds at most
// trickleWait to the next message (bench/pipeline's commit -> ack p50 went
// from about 0.9 to 1.7-1.9 ms; the p99 goal is 25 ms). A shorter wait
// would buy nothing on machines like the reference one, whose sleeps last
// about 1.1 ms whatever shorter time they ask for.
type coalescingConn struct {
	net.Conn
	trickled bool // the last read found the socket nearly empty
}

const (
	trickleBytes = 2048
	trickleWait  = time.Millisecond
)

func (c *coalescingConn) Read(p []byte) (int, error) {
	if c.trickled {
		c.trickled = false
		time.Sleep(trickleWait)
	}
	n, err := c.Conn.Read(p)
	if err == nil && n < len(p) && n < trickleBytes {
		c.trickled = true
	}
	return n, err
}
