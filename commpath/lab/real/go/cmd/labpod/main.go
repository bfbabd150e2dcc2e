// labpod runs inside the real lab's pods: `serve` answers HTTP and HTTPS (a self-signed
// certificate made at start) for the apiserver proxy and port-forward; `call` reaches the
// apiserver through the kubernetes service VIP with the pod's service-account token.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func selfSigned(name string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serve(httpPort, httpsPort int) {
	host, _ := os.Hostname()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "labpod %s %s %s\n", host, r.Method, r.URL.Path)
	})
	go func() {
		srv := &http.Server{Addr: fmt.Sprintf(":%d", httpsPort), Handler: h,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned(host)}}}
		fmt.Println(srv.ListenAndServeTLS("", ""))
		os.Exit(1)
	}()
	fmt.Printf("labpod %s serving http :%d https :%d\n", host, httpPort, httpsPort)
	fmt.Println(http.ListenAndServe(fmt.Sprintf(":%d", httpPort), h))
	os.Exit(1)
}

func call(count int, path string) int {
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		fmt.Println("no token:", err)
		return 1
	}
	caPEM, _ := os.ReadFile(saDir + "/ca.crt")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	url := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")) + path
	failed := 0
	for i := 0; i < count; i++ {
		// a connection per request: each one is a pod-to-apiserver connection of its own
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+string(token))
		req.Header.Set("User-Agent", "commpath-labpod")
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println("error:", err)
			failed++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Printf("GET %s -> %d\n", url, resp.StatusCode)
	}
	return failed
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labpod serve|call [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	httpPort := fs.Int("http", 8080, "plain HTTP port")
	httpsPort := fs.Int("https", 8443, "HTTPS port")
	count := fs.Int("count", 3, "requests")
	path := fs.String("path", "/api", "apiserver path")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*httpPort, *httpsPort)
	case "call":
		os.Exit(call(*count, *path))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
