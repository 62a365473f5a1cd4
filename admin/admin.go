// Package admin serves the gateway's admin listener: Go's profiles under
// /debug/pprof/, a snapshot of the process's size under /debug/stats
// (ReadStats), and POST /debug/gc. Profiles expose memory contents, so
// the handler is served on its own listener, never next to the public
// routes. Only cmd/wsbridge links this package (wsbench's tests use its
// Stats type): importing
// net/http/pprof registers its handlers on http.DefaultServeMux, which
// no other binary or package should get.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
)

// Options are what the admin handler reads from the running gateway.
type Options struct {
	// Conns are the live client connections, counted in Stats (nil:
	// none).
	Conns *front.Conns
}

// Handler serves what operators and the load tool read from a running
// gateway: Go's profiles under /debug/pprof/, a snapshot of its size under
// /debug/stats, and POST /debug/gc to collect garbage and return free
// memory to the kernel before a measurement.
func Handler(o Options) http.Handler {
	conns := o.Conns
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ReadStats(conns))
	})
	// A benchmark reads RSS at steady state without waiting for it: the
	// runtime forces a collection every two minutes and returns freed
	// pages to the kernel in the background, so an idle gateway gets
	// here by itself within minutes.
	mux.HandleFunc("POST /debug/gc", func(w http.ResponseWriter, r *http.Request) {
		debug.FreeOSMemory()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ReadStats(conns))
	})
	return mux
}

// Stats is a snapshot of the gateway's size.
type Stats struct {
	// Connections is the number of live WebSocket sessions and SSE streams.
	Connections int `json:"connections"`
	Goroutines  int `json:"goroutines"`
	// RSSBytes is the resident set size the kernel reports (Linux; 0
	// elsewhere): what a connection really costs, stacks and buffers
	// included.
	RSSBytes     int64  `json:"rss_bytes"`
	HeapInuse    uint64 `json:"heap_inuse_bytes"`
	StackInuse   uint64 `json:"stack_inuse_bytes"`
	GoSys        uint64 `json:"go_sys_bytes"`
	NumGC        uint32 `json:"num_gc"`
	PauseTotalNs uint64 `json:"gc_pause_total_ns"`
	GoMaxProcs   int    `json:"gomaxprocs"`
	ProcessID    int    `json:"pid"`
}

// ReadStats takes the snapshot. It stops the world briefly (MemStats), so
// it is for an operator's or a benchmark's occasional look.
func ReadStats(conns *front.Conns) Stats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	pid := os.Getpid()
	s := Stats{
		Goroutines: runtime.NumGoroutine(), RSSBytes: memory.ProcessRSS(pid),
		HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, GoSys: m.Sys, NumGC: m.NumGC,
		PauseTotalNs: m.PauseTotalNs, GoMaxProcs: runtime.GOMAXPROCS(0), ProcessID: pid,
	}
	if conns != nil {
		s.Connections = conns.Len()
	}
	return s
}
