package prodtest

import (
	"testing"
	"time"
)

// The checker itself must be able to fail: each kind of finding is counted.
func TestCompareLog(t *testing.T) {
	log := []logged{
		{1, "a", "created", "t1"}, {2, "a", "updated", "t2"}, {3, "a", "deleted", ""},
		{4, "b", "created", "t3"},
	}
	ev := func(id, mid, op, title string) stored {
		return stored{subject: prefix + ".memory.image." + op, msgID: id, memoryID: mid, op: op, title: title}
	}
	a1, a2, a3, b1 := ev("1", "a", "created", "t1"), ev("2", "a", "updated", "t2"), ev("3", "a", "deleted", ""), ev("4", "b", "created", "t3")
	edge := stored{subject: prefix + ".edge.neon-db.created", msgID: "e1"}
	cases := []struct {
		name                      string
		msgs                      []stored
		lost, dup, order, unknown int
	}{
		{"exactly once", []stored{a1, b1, a2, edge, a3}, 0, 0, 0, 0},
		{"lost", []stored{a1, a3, b1}, 1, 0, 0, 0},
		{"same msg id twice", []stored{a1, a2, a2, a3, b1}, 0, 1, 0, 0},
		{"edge msg id twice", []stored{a1, a2, a3, b1, edge, edge}, 0, 1, 0, 0},
		{"same change, new msg id", []stored{a1, a2, ev("2x", "a", "updated", "t2"), a3, b1}, 0, 1, 0, 0},
		{"deleted before updated", []stored{a1, a3, a2, b1}, 0, 0, 1, 0},
		{"unknown", []stored{a1, a2, a3, b1, ev("9", "c", "created", "zz")}, 0, 0, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := compareLog(log, c.msgs)
			if v.lost != c.lost || v.duplicated != c.dup || v.outOfOrder != c.order || v.unexpected != c.unknown {
				t.Fatalf("got %s; want lost %d dup %d order %d unexpected %d", v, c.lost, c.dup, c.order, c.unknown)
			}
			if v.ok() != (c.lost+c.dup+c.order+c.unknown == 0) {
				t.Fatalf("ok() = %v for %s", v.ok(), v)
			}
		})
	}
}

func TestLagTrend(t *testing.T) {
	t0 := time.Unix(0, 0)
	var flat, growing []lagSample
	for i := 0; i < 20; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		wal := float64(i) * 1000
		flat = append(flat, lagSample{at: at, wal: wal, lag: float64(100 + 50*(i%2))})
		growing = append(growing, lagSample{at: at, wal: wal, lag: float64(i) * 6000})
	}
	if slope, rate, _, _ := lagTrend(growing); slope < 5990 || slope > 6010 || rate != 1000 {
		t.Fatalf("trend of a lag growing 6000 B/s: slope %.0f, WAL %.0f B/s", slope, rate)
	}
	if first, last := lagThirds(flat); last > first+lagNoise {
		t.Fatalf("a saw-tooth lag reads as growing: last third low %.0f, first third high %.0f", last, first)
	}
	if first, last := lagThirds(growing); last <= first+lagNoise {
		t.Fatalf("a growing lag reads as flat: last third low %.0f, first third high %.0f", last, first)
	}
}

func TestParseQuantity(t *testing.T) {
	for q, want := range map[string]int64{"128Mi": 128 << 20, "1Gi": 1 << 30, "500M": 500e6, "1000": 1000} {
		if got, err := parseQuantity(q); err != nil || got != want {
			t.Errorf("parseQuantity(%q) = %d, %v; want %d", q, got, err, want)
		}
	}
}
