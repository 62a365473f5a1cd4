package main

import (
	_ "embed"
	"net"
	"net/http"
)

// demoPage is the zero-setup demo: a chat over STOMP (/stomp) and a panel
// following the same topic over SSE (/sse/demo). No build step.
//
//go:embed demo/index.html
var demoPage []byte

func demoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		// img-src data: admits the page's inline favicon (and nothing fetched).
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws: wss:")
		w.Write(demoPage)
	})
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
