package main

// The link to the gateway core: one socket (inherited from the gateway process), frames
// in both directions. A frame is a 9-byte header (payload length, uint32 big-endian; kind,
// one byte; stream, uint32 big-endian) and its payload. The kinds are listed in
// agents/edge.py, which is the other end.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	kindListening = 'L' // edge → core: the bound port, in decimal (stream 0)
	kindHandshake = 'H' // edge → core: a connection was accepted, its TLS handshake begins (stream 0)
	kindOpen      = 'O' // edge → core: a Report stream opened; payload: JSON (node, certificate, fence-after)
	kindMessage   = 'M' // edge → core: one frame of a stream, as the agent sent it
	kindClosed    = 'C' // edge → core: the agent ended its stream or went away
	kindLag       = 'G' // edge → core: how late the edge's timer ran, at worst, in the last quarter second (ms, uint32), and when this was queued (µs since 1970, uint64)
	kindAnswer    = 'A' // core → edge: an encoded ReportResponse to send on the stream
	kindEnd       = 'E' // core → edge: end the stream; payload: gRPC status code (uint32) and details
	kindBeat      = 'B' // core → edge: the core is alive and vouches for the site this many more milliseconds (uint32)

	headerBytes  = 9
	maxCoreFrame = 1 << 20 // a core frame is an answer or an end; far below this
	outboxFrames = 65536
	batchPause   = time.Millisecond
)

type frame struct {
	kind    byte
	stream  uint32
	payload []byte
}

// link writes frames to the core from one goroutine (in order, batched) and reads the
// core's frames in another.
type link struct {
	conn   net.Conn
	outbox chan frame
	done   chan struct{}
	once   sync.Once
}

func newLink(conn net.Conn) *link {
	return &link{conn: conn, outbox: make(chan frame, outboxFrames), done: make(chan struct{})}
}

// send queues a frame for the core; it blocks while the core is that far behind (and
// so, through gRPC flow control, holds back the agents), and drops it once the link is gone.
func (l *link) send(kind byte, stream uint32, payload []byte) {
	select {
	case l.outbox <- frame{kind, stream, payload}:
	case <-l.done:
	}
}

func (l *link) close() { l.once.Do(func() { close(l.done) }) }

// write sends queued frames: whatever has gathered, in one write, then a pause for more
// to gather. At 10,000 reports a second that is a write here, and a wakeup of the
// gateway's event loop, per batch instead of per frame, for at most batchPause of delay.
func (l *link) write() error {
	out := bufio.NewWriterSize(l.conn, 256<<10)
	header := make([]byte, headerBytes)
	put := func(f frame) error {
		binary.BigEndian.PutUint32(header[0:4], uint32(len(f.payload)))
		header[4] = f.kind
		binary.BigEndian.PutUint32(header[5:9], f.stream)
		if _, err := out.Write(header); err != nil {
			return err
		}
		_, err := out.Write(f.payload)
		return err
	}
	for {
		select {
		case next := <-l.outbox:
			if err := put(next); err != nil {
				return err
			}
		case <-l.done:
			return nil
		}
		for gathered := true; gathered; {
			select {
			case next := <-l.outbox:
				if err := put(next); err != nil {
					return err
				}
			default:
				gathered = false
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
		time.Sleep(batchPause)
	}
}

// read hands each frame from the core to deliver until the core closes the link.
func (l *link) read(deliver func(frame)) error {
	in := bufio.NewReaderSize(l.conn, 64<<10)
	header := make([]byte, headerBytes)
	for {
		if _, err := io.ReadFull(in, header); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		size := binary.BigEndian.Uint32(header[0:4])
		if size > maxCoreFrame {
			return fmt.Errorf("the core sent a frame of %d bytes", size)
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(in, payload); err != nil {
			return err
		}
		deliver(frame{header[4], binary.BigEndian.Uint32(header[5:9]), payload})
	}
}
