package main

// How far behind the edge runs. A frame an agent sent waits for one of the edge's
// goroutines to be scheduled (a TLS handshake storm, a machine short of CPU), and then
// behind the frames queued for the gateway; the gateway must not declare Silent a node
// whose report is only waiting. So the edge measures how late its own timer runs (its
// goroutines wait that long for a CPU, and so do the agents' frames) and tells the
// gateway the worst of each quarter second, in a frame stamped with the time it was
// queued: the gateway adds how long that frame took to reach it, and allows for the sum
// as for its own lag (ledger.Lag).

import (
	"encoding/binary"
	"time"
)

const (
	lagEvery  = 100 * time.Millisecond
	lagReport = 250 * time.Millisecond
)

func (e *edge) measureLag() {
	var worst time.Duration
	reported := time.Now()
	for {
		due := time.Now().Add(lagEvery)
		time.Sleep(lagEvery)
		now := time.Now()
		worst = max(worst, now.Sub(due))
		if now.Sub(reported) >= lagReport {
			payload := binary.BigEndian.AppendUint32(nil, uint32(worst.Milliseconds()))
			e.core.send(kindLag, 0, binary.BigEndian.AppendUint64(payload, uint64(now.UnixMicro())))
			worst, reported = 0, now
		}
	}
}
