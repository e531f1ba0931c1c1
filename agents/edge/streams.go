package main

// Report streams: each is announced to the core, its frames passed on unread, and
// whatever the core answers sent back, until the core ends it or the agent goes.

import (
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	reportMethod     = "/gigafab.health.v1.HealthService/Report"
	healthMethod     = "/grpc.health.v1.Health/Check"
	healthService    = "gigafab.health.v1.HealthService"
	fenceAfterHeader = "gigafab-fence-after"
	maxWaiting       = 1024 // answers queued for one stream whose agent does not read them
)

// rawCodec passes frames through as bytes: the core decodes reports, the edge never does.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// opening is what the core learns of a stream when it opens: who holds it.
type opening struct {
	Node        string  `json:"node"`
	Certificate string  `json:"certificate"`
	FenceAfter  *string `json:"fenceAfter,omitempty"`
	Resumed     bool    `json:"resumed,omitempty"` // its connection resumed a TLS session: no certificate was signed or verified
}

// mailbox holds the core's frames for one stream until its handler sends them.
type mailbox struct {
	mu         sync.Mutex
	frames     []frame
	overflowed bool
	arrived    chan struct{}
}

// put queues a frame; an agent that reads none of its answers gets its stream ended
// rather than have them all held for it.
func (m *mailbox) put(f frame) {
	m.mu.Lock()
	switch {
	case len(m.frames) < maxWaiting:
		m.frames = append(m.frames, f)
	case !m.overflowed:
		m.overflowed = true
		m.frames = append(m.frames, frame{kindEnd, f.stream, endPayload(codes.ResourceExhausted, "too many answers unread")})
	}
	m.mu.Unlock()
	select {
	case m.arrived <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() []frame {
	m.mu.Lock()
	defer m.mu.Unlock()
	frames := m.frames
	m.frames = nil
	return frames
}

type edge struct {
	core    *link
	next    atomic.Uint32
	mu      sync.Mutex
	streams map[uint32]*mailbox
	vouch   vouch
}

func newEdge(core *link) *edge { return &edge{core: core, streams: map[uint32]*mailbox{}} }

// deliver hands a frame from the core to its stream (frames for a stream already gone are
// dropped), or takes the core's beat.
func (e *edge) deliver(f frame) {
	if f.kind == kindBeat {
		e.resumed(e.vouch.heard(f.payload, time.Now()))
		return
	}
	e.mu.Lock()
	box := e.streams[f.stream]
	e.mu.Unlock()
	if box != nil {
		box.put(f)
	}
}

func endPayload(code codes.Code, details string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(code)), details...)
}

// serve is the handler of every method: Report streams and the standard health check.
func (e *edge) serve(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	switch method {
	case reportMethod:
		return e.report(stream)
	case healthMethod:
		return check(stream)
	}
	return status.Errorf(codes.Unimplemented, "unknown method %s", method)
}

func (e *edge) report(stream grpc.ServerStream) error {
	ctx := stream.Context()
	announced, err := holder(stream)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	id := e.next.Add(1)
	box := &mailbox{arrived: make(chan struct{}, 1)}
	e.mu.Lock()
	e.streams[id] = box
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.streams, id)
		e.mu.Unlock()
	}()
	e.core.send(kindOpen, id, announced)
	go func() {
		for {
			var message []byte
			if err := stream.RecvMsg(&message); err != nil {
				e.core.send(kindClosed, id, nil)
				return
			}
			e.core.send(kindMessage, id, message)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-box.arrived:
		}
		for _, f := range box.take() {
			if f.kind == kindAnswer {
				payload := f.payload
				if err := stream.SendMsg(&payload); err != nil {
					return err
				}
				continue
			}
			if len(f.payload) < 4 {
				return status.Error(codes.Internal, "the gateway ended the stream without a status")
			}
			code := codes.Code(binary.BigEndian.Uint32(f.payload[:4]))
			if code == codes.OK {
				return nil
			}
			return status.Error(code, string(f.payload[4:]))
		}
	}
}

// holder is the announcement of a stream: its client certificate's node and the
// certificate itself (the core reads its sites), the fencing it declared, and whether
// its connection resumed a TLS session (crypto/tls resumes only a session whose
// certificate chain still verifies against the current CA and has not expired).
func holder(stream grpc.ServerStream) ([]byte, error) {
	caller, ok := peer.FromContext(stream.Context())
	if !ok {
		return nil, errors.New("no peer")
	}
	info, ok := caller.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate")
	}
	leaf := info.State.PeerCertificates[0]
	announced := opening{
		Node:        leaf.Subject.CommonName,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})),
		Resumed:     info.State.DidResume,
	}
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
		if values := md.Get(fenceAfterHeader); len(values) > 0 {
			announced.FenceAfter = &values[0]
		}
	}
	return json.Marshal(announced)
}

// check answers grpc.health.v1.Health/Check: SERVING for the gateway's service (and the
// server as a whole), NOT_FOUND for any other, as the Python gateway's health servicer does.
func check(stream grpc.ServerStream) error {
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	service := ""
	for len(request) > 0 {
		number, kind, n := protowire.ConsumeTag(request)
		if n < 0 {
			return status.Error(codes.InvalidArgument, "not a HealthCheckRequest")
		}
		request = request[n:]
		if number == 1 && kind == protowire.BytesType {
			value, m := protowire.ConsumeString(request)
			if m < 0 {
				return status.Error(codes.InvalidArgument, "not a HealthCheckRequest")
			}
			service, request = value, request[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(number, kind, request)
		if m < 0 {
			return status.Error(codes.InvalidArgument, "not a HealthCheckRequest")
		}
		request = request[m:]
	}
	if service != "" && service != healthService {
		return status.Error(codes.NotFound, "unknown service")
	}
	serving := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1) // status: SERVING
	return stream.SendMsg(&serving)
}
