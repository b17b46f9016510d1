// Package ssetest reads a Server-Sent Events stream for tests: the API's,
// the SSE feed's and the daemon's end-to-end tests read the same wire format.
//
// It must not import other project packages.
//
// Invariant: an event is handed over at its blank line, with its name, id and
// data as the stream sent them (data lines joined).
package ssetest

import (
	"bufio"
	"io"
	"strings"
)

// Event is one event of the stream.
type Event struct{ Name, ID, Data string }

// Scan reads r until it ends and calls emit for every event that has a name
// or data. With comments, each comment line (a keep-alive) is emitted at once
// as an event named ":" whose data is the comment's text; without, comments
// are skipped.
func Scan(r io.Reader, comments bool, emit func(Event)) {
	sc := bufio.NewScanner(r)
	var ev Event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || ev.Data != "" {
				emit(ev)
			}
			ev = Event{}
		case strings.HasPrefix(line, ":"):
			if comments {
				emit(Event{Name: ":", Data: strings.TrimSpace(line[1:])})
			}
		case strings.HasPrefix(line, "event: "):
			ev.Name = line[7:]
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "data: "):
			ev.Data += line[6:]
		}
	}
}
