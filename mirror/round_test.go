package mirror

import (
	"strings"
	"testing"
	"time"
)

func TestMirror_roundSchedule(t *testing.T) {
	m := &Mirror{cfg: Config{}.withDefaults()}
	for _, c := range []struct {
		round int
		want  time.Duration
	}{
		{1, 10 * time.Minute}, {2, 20 * time.Minute}, {3, 40 * time.Minute}, {8, 1280 * time.Minute},
		{9, 24 * time.Hour}, {10, 24 * time.Hour}, {1000, 24 * time.Hour},
	} {
		if got := m.roundDelay(c.round); got != c.want {
			t.Errorf("roundDelay(%d) = %s; want %s", c.round, got, c.want)
		}
	}
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	note, next := m.finalNote(problem{note: "asset URL answered 404"}, 5, 1, now)
	if next == nil || !next.Equal(now.Add(10*time.Minute)) ||
		note != "asset URL answered 404 (round 1 of 10 gave up after 5 attempts; edgesync tries again after 2026-12-03T10:10:00Z, or ask for Store Forever again once fixed)" {
		t.Errorf("round 1: %q, next %v", note, next)
	}
	note, next = m.finalNote(problem{note: "asset URL answered 404"}, 5, DefaultMaxRounds, now)
	if next != nil || !strings.Contains(note, "gave up after 5 attempts in each of 10 rounds; edgesync no longer retries by itself: fix the cause, then ask for Store Forever again") {
		t.Errorf("last round: %q, next %v", note, next)
	}
	note, next = m.finalNote(problem{note: "refused", permanent: true}, 1, 1, now)
	if next != nil || note != "refused" {
		t.Errorf("permanent: %q, next %v", note, next)
	}
}
