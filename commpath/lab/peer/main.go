// Command labpeer: the Go TLS peers of the commpath lab (apiserver, kubelet, clients, Konnectivity).
// Standard library only. Every loop is bounded by a count or a deadline.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "labpeer: "+format+"\n", a...)
	os.Exit(1)
}

func tlsVersion(s string) uint16 {
	switch s {
	case "1.0":
		return tls.VersionTLS10
	case "1.1":
		return tls.VersionTLS11
	case "1.2":
		return tls.VersionTLS12
	case "1.3":
		return tls.VersionTLS13
	case "":
		return 0
	}
	die("unknown TLS version %q", s)
	return 0
}

func loadPool(path string) *x509.CertPool {
	if path == "" {
		return nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		die("%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		die("%s: no certificates", path)
	}
	return pool
}

func keylogWriter(path string) io.Writer {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0600)
	if err != nil {
		die("%v", err)
	}
	return f
}

type tlsFlags struct {
	cert, key, ca, min, max, keylog, serverName, alpn string
	insecure, requireClient                           bool
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "cert", "", "certificate (PEM)")
	fs.StringVar(&t.key, "key", "", "private key (PEM)")
	fs.StringVar(&t.ca, "ca", "", "CA bundle to verify the peer")
	fs.StringVar(&t.min, "tls-min", "1.2", "minimum TLS version")
	fs.StringVar(&t.max, "tls-max", "", "maximum TLS version")
	fs.StringVar(&t.keylog, "keylog", "", "NSS key log file (append)")
	fs.StringVar(&t.serverName, "server-name", "", "SNI / verified name (client)")
	fs.StringVar(&t.alpn, "alpn", "", "comma separated ALPN protocols")
	fs.BoolVar(&t.insecure, "insecure", false, "do not verify the server certificate (client)")
	fs.BoolVar(&t.requireClient, "require-client-cert", false, "require a verified client certificate (server)")
}

func (t *tlsFlags) config(server bool) *tls.Config {
	cfg := &tls.Config{MinVersion: tlsVersion(t.min), MaxVersion: tlsVersion(t.max), KeyLogWriter: keylogWriter(t.keylog)}
	if t.alpn != "" {
		cfg.NextProtos = strings.Split(t.alpn, ",")
	}
	if t.cert != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			die("%v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if server {
		cfg.ClientCAs = loadPool(t.ca)
		if cfg.ClientCAs != nil {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
			if t.requireClient {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
			}
		}
	} else {
		cfg.RootCAs = loadPool(t.ca)
		cfg.InsecureSkipVerify = t.insecure
		cfg.ServerName = t.serverName
	}
	return cfg
}

// untilSignal returns a context cancelled on SIGINT/SIGTERM or after the duration.
func untilSignal(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func who(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return "x509:" + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		return "token"
	}
	return "anonymous"
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ---------------------------------------------------------------- servers

func apiserverHandler(role string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id := who(r)
		if id == "anonymous" && role == "apiserver" && r.URL.Path != "/version" {
			w.WriteHeader(http.StatusUnauthorized)
			writeJSON(w, map[string]string{"kind": "Status", "status": "Failure", "reason": "Unauthorized"})
			return
		}
		writeJSON(w, map[string]interface{}{"kind": "Status", "apiVersion": "v1", "path": r.URL.Path, "user": id, "role": role})
	})
	return mux
}

// kubeletHandler serves the kubelet API; with anonymous false, a request without a client certificate
// or a token gets 401 on every path, as a kubelet with --anonymous-auth=false answers.
func kubeletHandler(anonymous bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/containerLogs/", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 20; i++ {
			fmt.Fprintf(w, "2024-01-01T00:00:%02dZ stdout F log line %d of %s\n", i, i, r.URL.Path)
		}
	})
	upgrade := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			http.Error(w, "upgrade required", http.StatusBadRequest)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "no hijack", http.StatusInternalServerError)
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", r.Header.Get("Upgrade"))
		fmt.Fprintf(buf, "stream %s: hello from the container\n", r.URL.Path)
		buf.Flush()
	}
	mux.HandleFunc("/exec/", upgrade)
	mux.HandleFunc("/attach/", upgrade)
	mux.HandleFunc("/portForward/", upgrade)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]interface{}{"kind": "PodList", "path": r.URL.Path, "user": who(r)})
	})
	if anonymous {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if who(r) == "anonymous" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "Unauthorized\n")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func cmdServe(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var t tlsFlags
	t.register(fs)
	role := fs.String("role", "apiserver", "apiserver | kubelet")
	listen := fs.String("listen", "", "HTTPS listen address")
	plain := fs.String("plain", "", "plain HTTP listen address (kubelet read-only port)")
	anonymous := fs.Bool("anonymous", true, "kubelet: answer requests without credentials (--anonymous-auth)")
	dur := fs.Duration("duration", 10*time.Minute, "stop after")
	fs.Parse(args)
	var h, readOnly http.Handler
	if *role == "kubelet" {
		h = kubeletHandler(*anonymous)
		readOnly = kubeletHandler(true) // the read-only port never authenticates
	} else {
		h = apiserverHandler(*role)
		readOnly = h
	}
	ctx, cancel := untilSignal(*dur)
	defer cancel()
	var servers []*http.Server
	if *listen != "" {
		ln, err := tls.Listen("tcp", *listen, t.config(true))
		if err != nil {
			die("%v", err)
		}
		s := &http.Server{Handler: h}
		servers = append(servers, s)
		go s.Serve(ln)
	}
	if *plain != "" {
		ln, err := net.Listen("tcp", *plain)
		if err != nil {
			die("%v", err)
		}
		s := &http.Server{Handler: readOnly}
		servers = append(servers, s)
		go s.Serve(ln)
	}
	fmt.Println("ready")
	<-ctx.Done()
	for _, s := range servers {
		s.Close()
	}
}

// ---------------------------------------------------------------- Konnectivity

func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		} else {
			dst.Close()
		}
		wg.Done()
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// konnServer accepts agents on --agent-listen (mutual TLS) and frontend requests on --frontend
// ("NODE HOST:PORT\n"); each frontend request consumes one idle agent connection of that node.
func cmdKonnServer(args []string) {
	fs := flag.NewFlagSet("konn-server", flag.ExitOnError)
	var t tlsFlags
	t.register(fs)
	agentListen := fs.String("agent-listen", "", "address for agents")
	frontend := fs.String("frontend", "127.0.0.1:8131", "address for the apiserver side")
	dur := fs.Duration("duration", 10*time.Minute, "stop after")
	fs.Parse(args)
	t.requireClient = true
	ctx, cancel := untilSignal(*dur)
	defer cancel()
	var mu sync.Mutex
	idle := map[string]chan net.Conn{}
	pool := func(node string) chan net.Conn {
		mu.Lock()
		defer mu.Unlock()
		if idle[node] == nil {
			idle[node] = make(chan net.Conn, 64)
		}
		return idle[node]
	}
	aln, err := tls.Listen("tcp", *agentListen, t.config(true))
	if err != nil {
		die("%v", err)
	}
	fln, err := net.Listen("tcp", *frontend)
	if err != nil {
		die("%v", err)
	}
	go func() {
		for {
			c, err := aln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n') // "AGENT node\n" (agent writes nothing more before OK)
				c.SetReadDeadline(time.Time{})
				if err != nil || !strings.HasPrefix(line, "AGENT ") {
					c.Close()
					return
				}
				pool(strings.TrimSpace(line[6:])) <- c
			}(c)
		}
	}()
	go func() {
		for {
			c, err := fln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				r := bufio.NewReader(c)
				line, err := r.ReadString('\n')
				f := strings.Fields(line)
				if err != nil || len(f) != 2 {
					c.Close()
					return
				}
				var agent net.Conn
				select {
				case agent = <-pool(f[0]):
				case <-time.After(5 * time.Second):
					c.Close()
					return
				}
				fmt.Fprintf(agent, "DIAL %s\n", f[1])
				ar := bufio.NewReader(agent)
				ok, err := ar.ReadString('\n')
				if err != nil || strings.TrimSpace(ok) != "OK" {
					agent.Close()
					c.Close()
					return
				}
				io.WriteString(c, "OK\n")
				pipe(c, agent)
			}(c)
		}
	}()
	fmt.Println("ready")
	<-ctx.Done()
	aln.Close()
	fln.Close()
}

type connReport struct {
	Event  string  `json:"event"`
	Path   string  `json:"path"`
	Local  string  `json:"local"`
	Remote string  `json:"remote"`
	Start  float64 `json:"start"`
	Note   string  `json:"note,omitempty"`
	Error  string  `json:"error,omitempty"`
}

var reportMu sync.Mutex

func report(r connReport) {
	reportMu.Lock()
	defer reportMu.Unlock()
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// konnAgent keeps --pool idle mutual-TLS connections to the server; each is used for one dial.
func cmdKonnAgent(args []string) {
	fs := flag.NewFlagSet("konn-agent", flag.ExitOnError)
	var t tlsFlags
	t.register(fs)
	server := fs.String("server", "", "Konnectivity server address")
	node := fs.String("node", "", "node name")
	poolSize := fs.Int("pool", 2, "idle connections kept")
	maxConns := fs.Int("max-conns", 200, "connections at most")
	dur := fs.Duration("duration", 10*time.Minute, "stop after")
	fs.Parse(args)
	ctx, cancel := untilSignal(*dur)
	defer cancel()
	cfg := t.config(false)
	slots := make(chan struct{}, *poolSize)
	var opened int
	var live sync.WaitGroup
	for opened < *maxConns {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			live.Wait()
			return
		}
		start := now()
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err := tls.DialWithDialer(&d, "tcp", *server, cfg)
		if err != nil {
			report(connReport{Event: "error", Path: "konnectivity", Remote: *server, Start: start, Error: err.Error()})
			<-slots
			select {
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		opened++
		report(connReport{Event: "connect", Path: "konnectivity", Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String(), Start: start})
		live.Add(1)
		go func(c *tls.Conn) {
			defer live.Done()
			defer c.Close()
			fmt.Fprintf(c, "AGENT %s\n", *node)
			go func() { <-ctx.Done(); c.Close() }()
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			<-slots // this connection is no longer idle: let a new one be opened
			if err != nil || !strings.HasPrefix(line, "DIAL ") {
				return
			}
			target := strings.TrimSpace(line[5:])
			tstart := now()
			tc, err := net.DialTimeout("tcp", target, 3*time.Second)
			if err != nil {
				io.WriteString(c, "ERR\n")
				return
			}
			report(connReport{Event: "connect", Path: "konnectivity-egress", Local: tc.LocalAddr().String(), Remote: tc.RemoteAddr().String(), Start: tstart})
			io.WriteString(c, "OK\n")
			pipe(c, tc)
		}(c)
	}
	<-ctx.Done()
	live.Wait()
}

// ---------------------------------------------------------------- client

func cmdClient(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	var t tlsFlags
	t.register(fs)
	method := fs.String("method", "GET", "HTTP method")
	count := fs.Int("count", 3, "requests per URL")
	interval := fs.Duration("interval", 50*time.Millisecond, "pause between requests")
	newConn := fs.Bool("new-conn", false, "one connection per request")
	token := fs.String("token", "", "bearer token")
	upgrade := fs.String("upgrade", "", "Upgrade header (exec/port-forward streams)")
	path := fs.String("path", "", "path id written into the connection reports")
	konn := fs.String("konnectivity", "", "FRONTEND,NODE: dial through a Konnectivity server")
	dialAddr := fs.String("dial", "", "connect here instead of the URL's host (an SSH tunnel's local end)")
	h2 := fs.Bool("h2", true, "offer HTTP/2 (ALPN h2) like client-go")
	body := fs.String("body", "", "request body")
	fs.Parse(args)
	urls := fs.Args()
	cfg := t.config(false)
	dialer := &net.Dialer{Timeout: 3 * time.Second}
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: *newConn, ForceAttemptHTTP2: *h2 && *upgrade == ""}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := now()
		target := addr
		if *dialAddr != "" {
			target = *dialAddr
		}
		if *konn != "" {
			parts := strings.SplitN(*konn, ",", 2)
			c, err := dialer.DialContext(ctx, "tcp", parts[0])
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(c, "%s %s\n", parts[1], addr)
			buf := make([]byte, 3)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "OK\n" {
				c.Close()
				return nil, fmt.Errorf("konnectivity dial %s via %s refused", addr, parts[1])
			}
			report(connReport{Event: "tunnelled", Path: *path, Local: c.LocalAddr().String(), Remote: addr, Start: start, Note: "via konnectivity"})
			return c, nil
		}
		c, err := dialer.DialContext(ctx, network, target)
		if err != nil {
			return nil, err
		}
		ev := "connect"
		note := ""
		if *dialAddr != "" {
			ev, note = "tunnelled", "via "+target
		}
		report(connReport{Event: ev, Path: *path, Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String(), Start: start, Note: note})
		return c, nil
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	failures := 0
	for _, u := range urls {
		for i := 0; i < *count; i++ {
			var rd io.Reader
			if *body != "" {
				rd = strings.NewReader(*body)
			}
			req, err := http.NewRequest(*method, u, rd)
			if err != nil {
				die("%v", err)
			}
			req.Header.Set("User-Agent", "kubernetes-lab/v1.25 (linux/amd64)")
			if *body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if *token != "" {
				req.Header.Set("Authorization", "Bearer "+*token)
			}
			if *upgrade != "" {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", *upgrade)
				req.Header.Set("X-Stream-Protocol-Version", "v4.channel.k8s.io")
			}
			resp, err := client.Do(req)
			if err != nil {
				failures++
				report(connReport{Event: "error", Path: *path, Remote: u, Start: now(), Error: err.Error()})
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(*interval)
		}
	}
	tr.CloseIdleConnections()
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "labpeer: %d requests failed\n", failures)
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: labpeer serve|konn-server|konn-agent|client ...")
	}
	switch os.Args[1] {
	case "serve":
		cmdServe(os.Args[2:])
	case "konn-server":
		cmdKonnServer(os.Args[2:])
	case "konn-agent":
		cmdKonnAgent(os.Args[2:])
	case "client":
		cmdClient(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}
