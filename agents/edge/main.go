// Command gigafab-edge is the agent-facing edge of a site's health gateway: it
// terminates the agents' mTLS, HTTP/2 and gRPC and passes each Report stream's frames,
// undecoded, to the gateway process that started it (agents/edge.py), over a socket
// that process hands it. Everything the gateway decides (who may speak for which node,
// what a report means, what to answer, when to end a stream, what goes to etcd) stays
// in the gateway; the edge only carries frames, where grpc.aio alone costs a core at
// 10,000 agents reporting once a second (bench/grpc_floor.py).
//
//	gigafab-edge --listen 0.0.0.0:20900 --cert tls.crt --key tls.key --ca ca.crt --core-fd 3
//
// It exits when the gateway closes the socket, and with status 1 (its reason on stderr)
// when it cannot listen or load its certificates.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

const (
	maxFrameBytes   = 1 << 20  // gRPC drops larger frames itself (the gateway's MAX_FRAME_BYTES)
	maxAnswerBytes  = 64 << 10 // the gateway's MAX_REPORT_BYTES
	windowBytes     = 64 << 10 // fixed windows: no BDP probing, a PING per report otherwise
	readBufferBytes = 8 << 10
	// gcPercent is the edge's GOGC unless the environment sets one: its heap is mostly
	// its connections (some 30 KiB each), which a collection finds alive. With Go's
	// default (collect whenever the heap doubled) marking 300 MB of them at 10,000 agents
	// took a second of CPU every few seconds, most of it as assists that stall the
	// goroutines forwarding reports, and the gateway declared the nodes behind them Silent
	// (bench/reconnect_storm.py). At 400 it collects a fifth as often with more headroom,
	// so the marking is left to the background worker: the heap peaks at five times
	// what is alive (about 1.5 GiB at 10,000 agents). In a container it is capped at half
	// the container's memory (memory.go).
	gcPercent = 400
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gigafab-edge: ")
	listen := flag.String("listen", "127.0.0.1:20900", "host:port to serve gRPC on")
	cert := flag.String("cert", "", "serving certificate (PEM)")
	key := flag.String("key", "", "its key (PEM)")
	ca := flag.String("ca", "", "CA that signs the agents' certificates (PEM)")
	coreFd := flag.Int("core-fd", 3, "file descriptor of the socket to the gateway")
	flag.Parse()
	collectGarbage(os.Getenv, cgroupMemoryMax)
	if err := run(*listen, *cert, *key, *ca, *coreFd); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(address, cert, key, ca string, coreFd int) error {
	conn, err := net.FileConn(os.NewFile(uintptr(coreFd), "core"))
	if err != nil {
		return fmt.Errorf("the socket to the gateway (fd %d): %w", coreFd, err)
	}
	core := newLink(conn)
	certs, err := loadCertificates(cert, key, ca)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("%w: is another gateway serving this site here?", err)
	}
	e := newEdge(core)
	handshakes := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return certs.config(), nil
	}}
	server := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(handshakes)),
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(e.serve),
		grpc.MaxRecvMsgSize(maxFrameBytes),
		grpc.MaxSendMsgSize(maxAnswerBytes),
		grpc.InitialWindowSize(windowBytes),
		grpc.InitialConnWindowSize(windowBytes),
		// ten thousand connections: small read buffers (a report is under 2 KiB), and write
		// buffers only while something is written (answers are rare)
		grpc.ReadBufferSize(readBufferBytes),
		grpc.SharedWriteBuffer(true),
		// agents that fence keep their stream under keepalive (a PING every second or more)
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 500 * time.Millisecond, PermitWithoutStream: true}),
	)
	go func() {
		if err := core.write(); err != nil {
			log.Printf("writing to the gateway: %v", err)
		}
		server.Stop()
	}()
	core.send(kindListening, 0, []byte(strconv.Itoa(listener.Addr().(*net.TCPAddr).Port)))
	go e.watch()
	go e.measureLag()
	go func() {
		if err := core.read(e.deliver); err != nil {
			log.Printf("reading from the gateway: %v", err)
		}
		core.close() // the gateway is gone: so is its edge
		server.Stop()
	}()
	return server.Serve(arrivals{listener, core})
}

// arrivals tells the gateway of each connection as it is accepted: from then until its
// Report stream opens it waits for the gateway (agents/arrivals.py).
type arrivals struct {
	net.Listener
	core *link
}

func (a arrivals) Accept() (net.Conn, error) {
	conn, err := a.Listener.Accept()
	if err == nil {
		a.core.send(kindHandshake, 0, nil)
	}
	return conn, err
}
