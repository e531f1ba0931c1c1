package main

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func credit(ms uint32) []byte { return binary.BigEndian.AppendUint32(nil, ms) }

func TestNoFenceBeforeTheFirstBeatNorWithoutLimit(t *testing.T) {
	var v vouch
	start := time.Unix(1000, 0)
	if _, due := v.due(start.Add(time.Hour)); due {
		t.Fatal("a core that never beat promised nothing: no fence")
	}
	v.heard(credit(math.MaxUint32), start)
	if _, due := v.due(start.Add(time.Hour)); due {
		t.Fatal("a core that vouches without limit is never fenced for")
	}
}

func TestFenceOnlyWhenTheCoreIsSilentAndItsWordRanOut(t *testing.T) {
	var v vouch
	start := time.Unix(1000, 0)
	v.heard(credit(5000), start)
	for _, c := range []struct {
		after time.Duration
		due   bool
	}{
		{500 * time.Millisecond, false}, // beating recently, word holds
		{2 * time.Second, false},        // silent, but its word holds
		{5 * time.Second, false},        // the very moment its word ends
		{5001 * time.Millisecond, true}, // silent and past its word
	} {
		if _, got := v.due(start.Add(c.after)); got != c.due {
			t.Errorf("after %v: due %v, want %v", c.after, got, c.due)
		}
	}
	v.heard(credit(0), start.Add(6*time.Second)) // beating again, out of contact: the core fences itself
	if _, due := v.due(start.Add(6*time.Second + 900*time.Millisecond)); due {
		t.Error("a core that beats decides its agents' fence itself")
	}
	if silent, due := v.due(start.Add(7*time.Second + 100*time.Millisecond)); !due || silent != 1100*time.Millisecond {
		t.Errorf("silent for over a second with no word left: due after %v, got due %v", silent, due)
	}
}

func TestStreamsFencedByTheEdgeAreEndedWhenTheCoreBeatsAgain(t *testing.T) {
	var v vouch
	start := time.Unix(1000, 0)
	v.heard(credit(0), start)
	if !v.fence(7) || v.fence(7) || !v.fence(9) {
		t.Fatal("each stream is told to fence once")
	}
	ended := v.heard(credit(1000), start.Add(3*time.Second))
	if len(ended) != 2 {
		t.Fatalf("ended %v, want streams 7 and 9", ended)
	}
	if again := v.heard(credit(1000), start.Add(4*time.Second)); len(again) != 0 {
		t.Fatalf("ended again: %v", again)
	}
}

func TestTheFenceDirectiveIsAReportResponseWithAFence(t *testing.T) {
	encoded := fenceDirective(1500 * time.Millisecond)
	number, kind, n := protowire.ConsumeTag(encoded)
	if number != 3 || kind != protowire.BytesType || n < 0 {
		t.Fatalf("field %d kind %d: not ReportResponse.fence (3)", number, kind)
	}
	fence, m := protowire.ConsumeBytes(encoded[n:])
	if m < 0 || n+m != len(encoded) {
		t.Fatal("not one length-delimited field")
	}
	number, kind, n = protowire.ConsumeTag(fence)
	reason, _ := protowire.ConsumeString(fence[n:])
	if number != 1 || kind != protowire.BytesType || reason != "gateway core unresponsive for 1.5 s: its lease cannot be renewed" {
		t.Fatalf("Fence.reason: field %d, %q", number, reason)
	}
}
