package tail

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestOptions_Normalize(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want string // "" = valid
	}{
		{"everything", Options{Prefix: "edgesync"}, ""},
		{"family", Options{Prefix: "edgesync", Subject: "edgesync.memory.>"}, ""},
		{"wildcard", Options{Prefix: "edgesync", Subject: "edgesync.edge.*.created"}, ""},
		{"all of the prefix", Options{Prefix: "edgesync", Subject: "edgesync.>"}, ""},
		{"other prefix", Options{Prefix: "edgesync", Subject: "memory.>"}, "not under the subject prefix"},
		{"admin is not stored", Options{Prefix: "edgesync", Subject: "edgesync.admin.reconcile"}, "matches nothing the stream holds"},
		{"empty token", Options{Prefix: "edgesync", Subject: "edgesync..memory"}, "empty token"},
		{"gt in the middle", Options{Prefix: "edgesync", Subject: "edgesync.>.created"}, "must be the last token"},
		{"partial wildcard", Options{Prefix: "edgesync", Subject: "edgesync.mem*"}, "whole tokens"},
		{"space", Options{Prefix: "edgesync", Subject: "edgesync.memory .>"}, "white space"},
		{"uuid", Options{Prefix: "edgesync", Memory: "0B3C8F3E-4A5E-4F7E-9A3C-1D2E3F4A5B6C"}, ""},
		{"not a uuid", Options{Prefix: "edgesync", Memory: "42"}, "is not a UUID"},
		{"urn is not a plain uuid", Options{Prefix: "edgesync", Memory: "urn:uuid:0b3c8f3e-4a5e-4f7e-9a3c-1d2e3f4a5b6c"}, "is not a UUID"},
		{"both starts", Options{Prefix: "edgesync", Since: time.Minute, FromSeq: 3}, "give one of them"},
		{"negative since", Options{Prefix: "edgesync", Since: -time.Minute}, "negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.o.Normalize()
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.o.Memory != "" && got.Memory != strings.ToLower(c.o.Memory) {
					t.Errorf("memory %q, want it lowercase", got.Memory)
				}
				return
			}
			if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want ErrBadOptions saying %q", err, c.want)
			}
		})
	}
}

func TestOptions_ConsumerConfig(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	o, err := Options{Prefix: "p", Subject: "p.memory.>", Since: time.Hour, now: func() time.Time { return now }}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	c := o.consumerConfig()
	if c.DeliverPolicy != jetstream.DeliverByStartTimePolicy || c.OptStartTime == nil || !c.OptStartTime.Equal(now.Add(-time.Hour)) || c.FilterSubjects[0] != "p.memory.>" {
		t.Errorf("--since: %+v", c)
	}
	if c := (Options{FromSeq: 7}).consumerConfig(); c.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || c.OptStartSeq != 7 || c.FilterSubjects != nil {
		t.Errorf("--from-seq: %+v", c)
	}
	if c := (Options{}).consumerConfig(); c.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Errorf("default: %+v, want only new events", c)
	}
}
