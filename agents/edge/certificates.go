package main

// The serving certificate and the agents' CA, re-read when the files change on disk
// (checked as each handshake begins, as the Python gateway's GatewayTls does).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"sync"
	"time"
)

type certificates struct {
	cert, key, ca string

	mu      sync.Mutex
	stamp   [3]time.Time
	current *tls.Config
}

func loadCertificates(cert, key, ca string) (*certificates, error) {
	c := &certificates{cert: cert, key: key, ca: ca}
	stamp, err := c.stamps()
	if err != nil {
		return nil, err
	}
	config, err := c.load()
	if err != nil {
		return nil, err
	}
	c.stamp, c.current = stamp, config
	return c, nil
}

func (c *certificates) stamps() ([3]time.Time, error) {
	var stamp [3]time.Time
	for i, path := range []string{c.cert, c.key, c.ca} {
		info, err := os.Stat(path)
		if err != nil {
			return stamp, err
		}
		stamp[i] = info.ModTime()
	}
	return stamp, nil
}

func (c *certificates) load() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	pem, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, fmt.Errorf("agents' CA: %w", err)
	}
	agents := x509.NewCertPool()
	if !agents.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("agents' CA: no certificate in %s", c.ca)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    agents,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}, nil
}

// config is the configuration for a handshake that begins now: reloaded if the files
// changed; a reload that fails (a half-written file) keeps the previous one.
func (c *certificates) config() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp, err := c.stamps()
	if err != nil || stamp == c.stamp {
		return c.current
	}
	c.stamp = stamp // a failed load is tried again when the files change again, not at every handshake
	config, err := c.load()
	if err != nil {
		log.Printf("certificates changed on disk but cannot be loaded (keeping the previous ones): %v", err)
		return c.current
	}
	c.current = config
	return config
}
