package main

// What a mutual TLS handshake between an agent and the gateway's edge costs in CPU, both
// ends together, as the reconnect storm makes them (docs/reliability.md):
//
//	go test -run '^$' -bench Handshake -cpu 1 ./bench/loadgen
//
// With one CPU the time per handshake is the CPU both ends spend on it. Full handshakes
// sign and verify P-256 certificates; resumed ones do not. Both exchange keys with the
// curves Go (and the Python agent's gRPC) offer first, X25519MLKEM768, unless told.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

func issued(t testing.TB, parent *x509.Certificate, signer *ecdsa.PrivateKey, name string) (tls.Certificate, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: parent == nil, BasicConstraintsValid: true, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if parent == nil {
		parent, signer = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, parsed
}

func handshakes(b *testing.B, curves []tls.CurveID, resume bool) {
	authority, caCert := issued(b, nil, nil, "ca")
	ca := authority.PrivateKey.(*ecdsa.PrivateKey)
	served, _ := issued(b, caCert, ca, "gateway")
	agent, _ := issued(b, caCert, ca, "agent")
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	server := &tls.Config{Certificates: []tls.Certificate{served}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, CurvePreferences: curves}
	client := &tls.Config{Certificates: []tls.Certificate{agent}, RootCAs: pool, ServerName: "localhost", CurvePreferences: curves}
	if resume {
		client.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer listener.Close()
	resumed := 0
	b.ResetTimer()
	for range b.N {
		raw, err := net.Dial("tcp", listener.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		accepted, err := listener.Accept()
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			end := tls.Server(accepted, server)
			err := end.Handshake()
			if err == nil {
				_, err = end.Write([]byte{1}) // the client reads past the session ticket
			}
			done <- err
			end.Close()
		}()
		conn := tls.Client(raw, client)
		if err := conn.Handshake(); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Read(make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if conn.ConnectionState().DidResume {
			resumed++
		}
		conn.Close()
	}
	if resume && resumed < b.N-1 {
		b.Fatalf("resumed %d of %d handshakes", resumed, b.N)
	}
}

func BenchmarkHandshakeFull(b *testing.B)       { handshakes(b, nil, false) }
func BenchmarkHandshakeFullX25519(b *testing.B) { handshakes(b, []tls.CurveID{tls.X25519}, false) }
func BenchmarkHandshakeResumed(b *testing.B)    { handshakes(b, nil, true) }
