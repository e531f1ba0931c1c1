// Command loadgen simulates many gigafab health agents against one gateway: every
// agent has its own certificate, TLS connection and Report stream, and sends a
// report every interval (at a random phase), as the Python agent does. It is written
// in Go so that the load generator costs a small part of a core and leaves the
// rest of the machine to the gateway under measurement.
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
	"os"
	"os/signal"
	"path/filepath"
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

// report encodes a ReportRequest: node identity, sequence, sent_at and the GPU states.
func report(identity, gpus []byte, sequence uint64, sentAt time.Time) []byte {
	out := make([]byte, 0, len(identity)+len(gpus)+32)
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	out = protowire.AppendBytes(out, identity)
	out = protowire.AppendTag(out, 2, protowire.VarintType)
	out = protowire.AppendVarint(out, sequence)
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
}

func agent(ctx context.Context, node, site, address string, pool *x509.CertPool, pki string, gpus int, interval, ramp time.Duration, c *counters) {
	if ramp > 0 { // nodes boot over a while, not in the same millisecond
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(ramp)))):
		case <-ctx.Done():
			return
		}
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, node+".crt"), filepath.Join(pki, node+".key"))
	if err != nil {
		fmt.Fprintln(os.Stderr, node, err)
		c.failed.Add(1)
		return
	}
	config := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost"}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(credentials.NewTLS(config)),
		// a fixed window turns off BDP probing: reports are small and steady
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		fmt.Fprintln(os.Stderr, node, err)
		c.failed.Add(1)
		return
	}
	defer conn.Close()
	identity, states := nodeIdentity(node, site), gpuStates(node, gpus)
	sequence := uint64(time.Now().UnixMicro())
	select {
	case <-time.After(time.Duration(rand.Int64N(int64(interval)))):
	case <-ctx.Done():
		return
	}
	for ctx.Err() == nil {
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
		if err != nil {
			time.Sleep(interval)
			continue
		}
		done := make(chan struct{})
		var ended error
		go func() {
			defer close(done)
			var reply []byte
			for ended = stream.RecvMsg(&reply); ended == nil; ended = stream.RecvMsg(&reply) {
				c.acked.Add(1)
			}
		}()
		ticker := time.NewTicker(interval)
		began, onStream := time.Now(), 0
		for ctx.Err() == nil {
			onStream++
			sequence++
			message := report(identity, states, sequence, time.Now())
			if ended = stream.SendMsg(&message); ended != nil {
				break
			}
			c.sent.Add(1)
			select {
			case <-ticker.C:
			case <-ctx.Done():
			case <-done:
			}
			if isClosed(done) {
				break
			}
		}
		ticker.Stop()
		_ = stream.CloseSend()
		if ctx.Err() == nil && c.failed.Load() < 30 {
			fmt.Fprintln(os.Stderr, node, "stream ended after", time.Since(began), onStream, "reports:", ended)
		}
		if ctx.Err() == nil {
			c.failed.Add(1)
			time.Sleep(interval)
		}
	}
}

func isClosed(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
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
	flag.Parse()
	ca, err := os.ReadFile(filepath.Join(*pki, "ca.crt"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	// stops at the deadline or when told to (SIGTERM/SIGINT), and then prints its totals
	stopped, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(stopped, time.Duration(*seconds*float64(time.Second)))
	defer cancel()
	var c counters
	var wg sync.WaitGroup
	for i := *first; i < *last; i++ {
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			agent(ctx, node, *site, *address, pool, *pki, *gpus, *interval, *ramp, &c)
		}(fmt.Sprintf("%s%05d", *prefix, i))
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]int64{"sent": c.sent.Load(), "acked": c.acked.Load(), "stream_failures": c.failed.Load()})
}
