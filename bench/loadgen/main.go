// Command loadgen simulates many gigafab health agents against one gateway: every
// agent has its own certificate, TLS connection and Report stream, and sends a
// report every interval (at a random phase), as the Python agent does. It is written
// in Go so that the load generator costs a small part of a core and leaves the
// rest of the machine to the gateway under measurement.
//
// A SIGUSR1 makes every agent of the process drop its connection (TCP and TLS) and
// reconnect at once, with a new handshake and a new stream: a reconnection storm. As
// the Python agent does, each agent keeps its TLS session and resumes it when it
// reconnects (-resume=false: every handshake is a full one, as after agent restarts). With
// -status the generator writes its counters and, per storm, how long each agent took
// to be acknowledged again (bench/reconnect_storm.py).
//
// Reports are encoded with protowire from the field numbers of
// proto/gigafab/health/v1/health.proto; the gateway decodes them with the generated
// Python stubs, so any mismatch shows up as refused reports.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

const method = "/gigafab.health.v1.HealthService/Report"

// rawCodec passes already-encoded protobuf bytes through.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(rawCodec{}) }

// report encodes a ReportRequest: node identity, sequence, sent_at (unless zero) and the GPU states.
func report(identity, gpus []byte, sequence uint64, sentAt time.Time) []byte {
	out := make([]byte, 0, len(identity)+len(gpus)+32)
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	out = protowire.AppendBytes(out, identity)
	out = protowire.AppendTag(out, 2, protowire.VarintType)
	out = protowire.AppendVarint(out, sequence)
	if sentAt.IsZero() { // no sent_at
		return append(out, gpus...)
	}
	var stamp []byte
	stamp = protowire.AppendTag(stamp, 1, protowire.VarintType)
	stamp = protowire.AppendVarint(stamp, uint64(sentAt.Unix()))
	stamp = protowire.AppendTag(stamp, 2, protowire.VarintType)
	stamp = protowire.AppendVarint(stamp, uint64(sentAt.Nanosecond()))
	out = protowire.AppendTag(out, 3, protowire.BytesType)
	out = protowire.AppendBytes(out, stamp)
	return append(out, gpus...)
}

func nodeIdentity(node, site string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, node)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, site)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, "loadgen")
}

// gpuStates encodes the repeated field 4: healthy H100s with plausible readings.
func gpuStates(node string, count int) []byte {
	var out []byte
	for i := range count {
		var g []byte
		g = protowire.AppendTag(g, 1, protowire.VarintType)
		g = protowire.AppendVarint(g, uint64(i))
		g = protowire.AppendTag(g, 2, protowire.BytesType)
		g = protowire.AppendString(g, fmt.Sprintf("GPU-%s-%d", node, i))
		g = protowire.AppendTag(g, 3, protowire.BytesType)
		g = protowire.AppendString(g, "NVIDIA H100 80GB HBM3")
		g = protowire.AppendTag(g, 4, protowire.Fixed32Type)
		g = protowire.AppendFixed32(g, 0x42300000) // 44.0 °C
		g = protowire.AppendTag(g, 5, protowire.Fixed32Type)
		g = protowire.AppendFixed32(g, 0x43960000) // 300.0 W
		g = protowire.AppendTag(g, 13, protowire.VarintType)
		g = protowire.AppendVarint(g, 1) // HEALTH_HEALTHY
		g = protowire.AppendTag(g, 14, protowire.BytesType)
		g = protowire.AppendString(g, "healthy")
		out = protowire.AppendTag(out, 4, protowire.BytesType)
		out = protowire.AppendBytes(out, g)
	}
	return out
}

type counters struct {
	sent, acked, failed atomic.Int64
	streaming           atomic.Int64 // agents whose current stream the gateway has acknowledged
	handshakes          atomic.Int64 // full TLS handshakes completed (a resumed session is not counted)
	resumed             atomic.Int64 // TLS handshakes that resumed the agent's session
	stalls              atomic.Int64 // reports sent over stallAfter after the stream's previous one
}

// stallAfter is the gateway's default --silent-after: an agent of this generator that
// could not send for that long (its goroutine got no CPU) is silent in truth, and the
// gateway is right to say so. Counted, so that a benchmark on a machine the generator
// shares with the gateway can tell such silences from the gateway's own mistakes.
const stallAfter = 3 * time.Second

// bufferBytes is the read and write buffer of a connection: a few reports (under 1 KiB each).
const bufferBytes = 8 << 10

// heapLimit is the default of -heap-limit: the generator collects garbage only when its
// heap reaches it. Its heap is mostly its agents' connections, which live as long as it
// does, so a collection finds little garbage; with Go's default (a collection whenever
// the heap doubled) the marking took up to 1.4 of the machine's two cores for seconds,
// stalling the agents' reports and the gateway beside it, which then declared thousands
// of nodes Silent (bench/reconnect_storm.py). A benchmark run stays below it.
const heapLimit = 6 << 30

// storm is one moment at which every agent of the process drops its connection and
// reconnects at once (SIGUSR1), and when each came back: its first acknowledgement on
// a stream of the new connection.
type storm struct {
	at        time.Time
	mu        sync.Mutex
	cycled    int
	handshook []float64 // seconds from the storm to each returning agent's completed TLS handshake
	back      []float64 // seconds from the storm to each returning agent's first acknowledgement
}

func (s *storm) shookHands(now time.Time) {
	s.mu.Lock()
	s.handshook = append(s.handshook, now.Sub(s.at).Seconds())
	s.mu.Unlock()
}

func (s *storm) cameBack(now time.Time) {
	s.mu.Lock()
	s.back = append(s.back, now.Sub(s.at).Seconds())
	s.mu.Unlock()
}

// countingCredentials are an agent's TLS credentials; they count each full handshake and note
// the first one after a storm.
type countingCredentials struct {
	credentials.TransportCredentials
	agent *session
}

func (h countingCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return conn, info, err
	}
	if state, ok := info.(credentials.TLSInfo); ok && state.State.DidResume {
		h.agent.c.resumed.Add(1)
	} else {
		h.agent.c.handshakes.Add(1)
	}
	if returning := h.agent.handshaking.Swap(nil); returning != nil {
		returning.shookHands(time.Now())
	}
	return conn, info, nil
}

func (h countingCredentials) Clone() credentials.TransportCredentials {
	return countingCredentials{h.TransportCredentials.Clone(), h.agent}
}

// settings are the same for every agent of the process.
type settings struct {
	site, address, pki string
	pool               *x509.CertPool
	gpus               int
	interval, ramp     time.Duration
	untimed            bool // reports without sent_at: the gateway leaves them out of its latency sample
	resume             bool // each agent keeps its TLS session and resumes it when it reconnects
}

// session is one agent across its connections.
type session struct {
	node             string
	identity, states []byte
	sequence         uint64                // rises across connections, so no report looks replayed
	returning        atomic.Pointer[storm] // until its first acknowledgement after the storm
	handshaking      atomic.Pointer[storm] // until its first handshake after the storm
	tls              *tls.Config
	*settings
	c *counters
}

func agent(ctx context.Context, node string, s *settings, cycle <-chan *storm, c *counters) {
	if !pause(ctx, randomUpTo(s.ramp)) { // nodes boot over a while, not in the same millisecond
		return
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(s.pki, node+".crt"), filepath.Join(s.pki, node+".key"))
	if err != nil {
		fmt.Fprintln(os.Stderr, node, err)
		c.failed.Add(1)
		return
	}
	a := &session{
		node: node, identity: nodeIdentity(node, s.site), states: gpuStates(node, s.gpus),
		sequence: uint64(time.Now().UnixMicro()), settings: s, c: c,
		tls: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: s.pool, ServerName: "localhost"},
	}
	if s.resume { // without: every connection is a full handshake, as after an agent restart
		a.tls.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	if !pause(ctx, randomUpTo(s.interval)) {
		return
	}
	for ctx.Err() == nil {
		dropped, err := a.connect(ctx, cycle)
		if err != nil {
			fmt.Fprintln(os.Stderr, node, err)
			c.failed.Add(1)
			return
		}
		if dropped != nil {
			a.returning.Store(dropped)
			a.handshaking.Store(dropped)
		}
	}
}

func randomUpTo(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(limit)))
}

// pause waits, false when the generator stops meanwhile.
func pause(ctx context.Context, wait time.Duration) bool {
	select {
	case <-time.After(wait):
		return true
	case <-ctx.Done():
		return false
	}
}

// connect reports over one new connection (TLS handshake and all) until the generator
// stops or a storm tells the agent to drop the connection; returns that storm.
func (a *session) connect(ctx context.Context, cycle <-chan *storm) (*storm, error) {
	conn, err := grpc.NewClient(a.address, grpc.WithTransportCredentials(countingCredentials{credentials.NewTLS(a.tls), a}),
		// a fixed window turns off BDP probing: reports are small and steady
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16),
		// small buffers, the write buffer only while writing: 10,000 connections' default 64 KiB
		// each made up most of the generator's 830 MB heap at 10,000 agents, all of it marked by each collection
		grpc.WithReadBufferSize(bufferBytes), grpc.WithWriteBufferSize(bufferBytes), grpc.WithSharedWriteBuffer(true))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	for ctx.Err() == nil {
		began, onStream := time.Now(), 0
		dropped, ended := a.stream(ctx, conn, cycle, &onStream)
		if dropped != nil {
			return dropped, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		// a stream that broke, not one that could not be opened (the connection is not ready yet)
		if onStream > 0 && a.c.failed.Add(1) <= 30 {
			fmt.Fprintln(os.Stderr, a.node, "stream ended after", time.Since(began), onStream, "reports:", ended)
		}
		select {
		case <-time.After(a.interval):
		case <-ctx.Done():
		case dropped := <-cycle:
			return dropped, nil
		}
	}
	return nil, nil
}

// stream holds one Report stream on conn: a report every interval, acknowledgements
// counted. On a storm it closes the whole connection (TCP and TLS) and returns the storm;
// otherwise it returns why the stream ended.
func (a *session) stream(ctx context.Context, conn *grpc.ClientConn, cycle <-chan *storm, onStream *int) (*storm, error) {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(streamCtx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var received error
	go func() {
		defer close(done)
		received = a.receive(stream)
	}()
	ticker := time.NewTicker(a.interval)
	defer ticker.Stop()
	var previous time.Time
	for {
		a.sequence++
		*onStream++
		sentAt := time.Now()
		if a.untimed {
			sentAt = time.Time{}
		}
		message := report(a.identity, a.states, a.sequence, sentAt)
		if err := stream.SendMsg(&message); err != nil {
			cancel()
			<-done
			return nil, err
		}
		a.c.sent.Add(1)
		if now := time.Now(); !previous.IsZero() && now.Sub(previous) > stallAfter {
			a.c.stalls.Add(1)
		}
		previous = time.Now()
		select {
		case <-ticker.C:
		case <-ctx.Done():
			<-done
			return nil, ctx.Err()
		case <-done:
			return nil, received
		case dropped := <-cycle:
			_ = conn.Close() // the connection itself goes, not just the stream
			<-done
			return dropped, nil
		}
	}
}

// receive counts the gateway's answers on a stream until it ends; the first one marks
// the agent as streaming (and back, when it is returning from a storm).
func (a *session) receive(stream grpc.ClientStream) error {
	var reply []byte
	err := stream.RecvMsg(&reply)
	if err != nil {
		return err
	}
	a.c.acked.Add(1)
	if returning := a.returning.Swap(nil); returning != nil {
		returning.cameBack(time.Now())
	}
	a.c.streaming.Add(1)
	defer a.c.streaming.Add(-1)
	for err = stream.RecvMsg(&reply); err == nil; err = stream.RecvMsg(&reply) {
		a.c.acked.Add(1)
	}
	return err
}

// storms are those of this process so far.
type storms struct {
	mu   sync.Mutex
	list []*storm
}

// start drops every agent's connection at once; agents that are between connections
// (not yet connected, or still holding the previous storm) are left out of it.
func (s *storms) start(cycles []chan *storm) {
	now := &storm{at: time.Now()}
	cycled := 0
	for _, cycle := range cycles {
		select {
		case cycle <- now:
			cycled++
		default:
		}
	}
	now.mu.Lock()
	now.cycled = cycled
	now.mu.Unlock()
	s.mu.Lock()
	s.list = append(s.list, now)
	s.mu.Unlock()
}

type stormStatus struct {
	At        float64   `json:"at"`
	Cycled    int       `json:"cycled"`
	Handshook []float64 `json:"handshook"`
	Back      []float64 `json:"back"`
}

type status struct {
	Sent           int64         `json:"sent"`
	Acked          int64         `json:"acked"`
	StreamFailures int64         `json:"stream_failures"`
	Streaming      int64         `json:"streaming"`
	Handshakes     int64         `json:"handshakes"`
	Resumed        int64         `json:"resumed"`
	Stalls         int64         `json:"stalls"`
	Storms         []stormStatus `json:"storms"`
}

func (s *storms) status(c *counters) status {
	out := status{Sent: c.sent.Load(), Acked: c.acked.Load(), StreamFailures: c.failed.Load(), Streaming: c.streaming.Load(),
		Handshakes: c.handshakes.Load(), Resumed: c.resumed.Load(), Stalls: c.stalls.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out.Storms = make([]stormStatus, 0, len(s.list))
	for _, one := range s.list {
		one.mu.Lock()
		out.Storms = append(out.Storms, stormStatus{
			At: float64(one.at.UnixNano()) / 1e9, Cycled: one.cycled,
			Handshook: append([]float64{}, one.handshook...), Back: append([]float64{}, one.back...), // [] rather than null
		})
		one.mu.Unlock()
	}
	return out
}

// write replaces path with the status; readers never see half a document.
func (s *storms) write(path string, c *counters) {
	document, err := json.Marshal(s.status(c))
	if err == nil {
		err = os.WriteFile(path+".tmp", document, 0o644)
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
	}
}

// watch starts a storm on each SIGUSR1 and writes the status every 250 ms (with a path).
func (s *storms) watch(ctx context.Context, path string, cycles []chan *storm, c *counters) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-usr1:
			s.start(cycles)
		case <-tick.C:
		}
		if path != "" {
			s.write(path, c)
		}
	}
}

func main() {
	address := flag.String("address", "127.0.0.1:25900", "gateway address")
	pki := flag.String("pki", "", "directory with ca.crt and <node>.crt/.key per agent")
	site := flag.String("site", "de-halm", "site the agents report for")
	prefix := flag.String("prefix", "de-halm-bench-", "node name prefix; names are prefix + %05d")
	first := flag.Int("first", 0, "first agent index")
	last := flag.Int("last", 100, "one past the last agent index")
	gpus := flag.Int("gpus", 8, "GPUs per node")
	seconds := flag.Float64("seconds", 60, "how long to report")
	interval := flag.Duration("interval", time.Second, "report interval")
	ramp := flag.Duration("ramp", 0, "agents connect at random moments within this time")
	untimed := flag.Bool("untimed", false, "reports without sent_at (the gateway then leaves them out of its latency sample)")
	heap := flag.Int64("heap-limit", heapLimit, "collect garbage only when the heap reaches this many bytes")
	resume := flag.Bool("resume", true, "agents resume their TLS session when they reconnect (false: full handshakes, as after restarts)")
	statusFile := flag.String("status", "", "write counters and storms (JSON) here every 250 ms")
	flag.Parse()
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(*heap)
	ca, err := os.ReadFile(filepath.Join(*pki, "ca.crt"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	// stops at the deadline or when told to (SIGTERM/SIGINT), and then prints its totals;
	// SIGUSR1 makes every agent drop its connection and reconnect at once (a storm)
	stopped, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(stopped, time.Duration(*seconds*float64(time.Second)))
	defer cancel()
	shared := &settings{
		site: *site, address: *address, pki: *pki, pool: pool, gpus: *gpus, interval: *interval, ramp: *ramp, untimed: *untimed,
		resume: *resume,
	}
	var c counters
	var wg sync.WaitGroup
	var record storms
	cycles := make([]chan *storm, 0, max(0, *last-*first))
	for i := *first; i < *last; i++ {
		cycle := make(chan *storm, 1)
		cycles = append(cycles, cycle)
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			agent(ctx, node, shared, cycle, &c)
		}(fmt.Sprintf("%s%05d", *prefix, i))
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		record.watch(ctx, *statusFile, cycles, &c)
	}()
	wg.Wait()
	<-watched
	if *statusFile != "" {
		record.write(*statusFile, &c)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]int64{"sent": c.sent.Load(), "acked": c.acked.Load(), "stream_failures": c.failed.Load()})
}
