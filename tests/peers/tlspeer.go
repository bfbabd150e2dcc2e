// tlspeer: a small Go crypto/tls server or client for commpath's handshake tests (stdlib only).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func versionOf(s string) uint16 {
	switch s {
	case "1.2":
		return tls.VersionTLS12
	case "1.3":
		return tls.VersionTLS13
	}
	return 0
}

func pool(path string) *x509.CertPool {
	if path == "" {
		return nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		fail(fmt.Errorf("no certificates in %s", path))
	}
	return p
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlspeer:", err)
	os.Exit(1)
}

func main() {
	mode := flag.String("mode", "server", "server | client")
	addr := flag.String("addr", "127.0.0.1:0", "listen or connect address")
	certFile := flag.String("cert", "", "certificate PEM")
	keyFile := flag.String("key", "", "private key PEM")
	caFile := flag.String("ca", "", "CA bundle to verify the peer")
	clientAuth := flag.String("clientauth", "none", "server: none | request | require")
	version := flag.String("version", "1.3", "1.2 | 1.3 (min = max)")
	sni := flag.String("sni", "", "client: server name")
	insecure := flag.Bool("insecure", false, "client: skip verification")
	keylog := flag.String("keylog", "", "append NSS key log lines here")
	conns := flag.Int("conns", 1, "server: connections to serve; client: connections to make")
	resume := flag.Bool("resume", false, "client: keep a session cache so later connections resume")
	flag.Parse()

	cfg := &tls.Config{MinVersion: versionOf(*version), MaxVersion: versionOf(*version)}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if *keylog != "" {
		f, err := os.OpenFile(*keylog, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		cfg.KeyLogWriter = f
	}
	if *mode == "server" {
		cfg.ClientCAs = pool(*caFile)
		switch *clientAuth {
		case "request":
			cfg.ClientAuth = tls.RequestClientCert
		case "require":
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		ln, err := tls.Listen("tcp", *addr, cfg)
		if err != nil {
			fail(err)
		}
		fmt.Println("listening", ln.Addr().String())
		for i := 0; i < *conns; i++ {
			c, err := ln.Accept()
			if err != nil {
				fail(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1024)
			n, err := c.Read(buf)
			if err == nil && n > 0 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			} else {
				fmt.Fprintln(os.Stderr, "tlspeer: server:", err)
			}
			c.Close()
		}
		return
	}
	cfg.RootCAs = pool(*caFile)
	cfg.ServerName = *sni
	cfg.InsecureSkipVerify = *insecure
	if *resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	failed := false
	for i := 0; i < *conns; i++ {
		if err := request(*addr, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "tlspeer:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func request(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
	out, _ := io.ReadAll(c)
	fmt.Printf("%s resumed=%v\n", out, c.ConnectionState().DidResume)
	return nil
}
