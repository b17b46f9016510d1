package natstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster_StreamSurvivesLeaderLoss creates an R3 stream, stops the
// stream leader's node, and checks that another node leads, publishes go on,
// dedupe still holds and the stopped node catches up when it is back.
func TestCluster_StreamSurvivesLeaderLoss(t *testing.T) {
	c := StartCluster(t, 3)
	js, err := jetstream.New(c.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateStream(ctx, js, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage, Replicas: 3, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	publish := func(id string) *jetstream.PubAck {
		t.Helper()
		var err error
		for ctx.Err() == nil {
			// Each try has its own deadline: a publish sent while the client
			// reconnects, or to a leader that just went away, gets no answer.
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			ack, perr := js.Publish(actx, "t.a", []byte(id), jetstream.WithMsgID(id))
			acancel()
			if err = perr; err == nil {
				return ack
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("publish %s: %v", id, err)
		return nil
	}
	for i := 0; i < 10; i++ {
		publish(fmt.Sprint(i))
	}
	old, err := c.WaitStreamLeader("T", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(old)
	if c.Running(old) {
		t.Fatal("stopped node still runs")
	}
	for i := 10; i < 20; i++ {
		publish(fmt.Sprint(i))
	}
	if ack := publish("5"); !ack.Duplicate {
		t.Fatalf("republished id 5 was stored again (seq %d) after the leader change", ack.Sequence)
	}
	now, err := c.WaitStreamLeader("T", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if now == old {
		t.Fatalf("node %s still leads after it was stopped", c.NodeName(old))
	}
	if err := c.Start(old); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 20 {
		t.Fatalf("stream holds %d messages, want 20", info.State.Msgs)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("replicas %d, want 3", info.Config.Replicas)
	}
}
