package main

// The edge keeps the site's fencing promise when the gateway core cannot: a core that
// stops (frozen, hung) renews no lease, and the operator starts the site's work
// elsewhere fenceAfter after the core's last contact with etcd. Agents behind the edge
// would still see a live stream (the edge answers their keepalives), so the core tells
// the edge, several times a second, until when it vouches for the site (its last
// contact plus fenceAfter, less the notice it gives its agents: records.FENCE_NOTICE).
// When that moment passes and the core has been silent for coreSilence, the edge tells
// every agent to fence, as the core would have. When the core speaks again, the streams
// the edge fenced are ended: their agents reconnect, and the core, on their new stream,
// acknowledges them (lifting the fence) or fences them itself.

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	coreSilence = time.Second            // beats come every 0.25 s: this long without one, the core is not serving
	watchEvery  = 100 * time.Millisecond // how often the edge checks
)

type vouch struct {
	mu     sync.Mutex
	beat   time.Time       // when the core last spoke; zero before its first beat
	until  time.Time       // until when it vouches for the site
	fenced map[uint32]bool // streams the edge told to fence since the core last spoke
}

// heard records a beat: the core vouches for credit milliseconds more (MaxUint32: without limit).
func (v *vouch) heard(payload []byte, now time.Time) (ended []uint32) {
	if len(payload) < 4 {
		return nil
	}
	credit := binary.BigEndian.Uint32(payload)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.beat = now
	if credit == math.MaxUint32 {
		v.until = time.Time{}
	} else {
		v.until = now.Add(time.Duration(credit) * time.Millisecond)
	}
	for id := range v.fenced {
		ended = append(ended, id)
	}
	v.fenced = nil
	return ended
}

// due is whether the agents must be told to fence now (the core is silent and its word
// ran out), and for how long the core has been silent.
func (v *vouch) due(now time.Time) (silent time.Duration, due bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	silent = now.Sub(v.beat)
	return silent, !v.beat.IsZero() && !v.until.IsZero() && silent > coreSilence && now.After(v.until)
}

// fence marks a stream as told to fence by the edge; false when it was already.
func (v *vouch) fence(id uint32) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fenced == nil {
		v.fenced = map[uint32]bool{}
	}
	if v.fenced[id] {
		return false
	}
	v.fenced[id] = true
	return true
}

// fenceDirective is a ReportResponse with a Fence directive (field 3; its reason, field 1),
// encoded as proto/gigafab/health/v1/health.proto defines it.
func fenceDirective(silent time.Duration) []byte {
	reason := fmt.Sprintf("gateway core unresponsive for %.1f s: its lease cannot be renewed", silent.Seconds())
	fence := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), reason)
	return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), fence)
}

// watch tells every stream to fence while the core is silent past its word, and ends
// the streams it fenced once the core speaks again.
func (e *edge) watch() {
	for range time.Tick(watchEvery) {
		silent, due := e.vouch.due(time.Now())
		if !due {
			continue
		}
		e.mu.Lock()
		boxes := make(map[uint32]*mailbox, len(e.streams))
		for id, box := range e.streams {
			boxes[id] = box
		}
		e.mu.Unlock()
		directive := fenceDirective(silent) // the same for every stream: encoded once
		for id, box := range boxes {
			if e.vouch.fence(id) {
				box.put(frame{kindAnswer, id, directive})
			}
		}
	}
}

// resumed ends the streams the edge fenced: the core decides anew on their next stream.
func (e *edge) resumed(ended []uint32) {
	for _, id := range ended {
		e.mu.Lock()
		box := e.streams[id]
		e.mu.Unlock()
		if box != nil {
			box.put(frame{kindEnd, id, endPayload(codes.Unavailable, "the gateway was unresponsive and is back: reconnect")})
		}
	}
}
