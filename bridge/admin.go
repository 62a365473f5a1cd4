package bridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
)

// AdminHandler serves what operators and the load tool read from a
// running gateway: Go's profiles under /debug/pprof/, a snapshot of its
// size under /debug/stats, and POST /debug/gc to collect garbage and
// return free memory to the kernel before a measurement. Profiles expose
// memory contents, so it is served on its own listener, never next to the
// public routes.
func AdminHandler(conns *Conns) http.Handler {
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
func ReadStats(conns *Conns) Stats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	pid := os.Getpid()
	s := Stats{
		Goroutines: runtime.NumGoroutine(), RSSBytes: ProcessRSS(pid),
		HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, GoSys: m.Sys, NumGC: m.NumGC,
		PauseTotalNs: m.PauseTotalNs, GoMaxProcs: runtime.GOMAXPROCS(0), ProcessID: pid,
	}
	if conns != nil {
		s.Connections = conns.Len()
	}
	return s
}

// ProcessRSS reads a process's resident set size from /proc, or 0 where
// that cannot be read.
func ProcessRSS(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte(" kB"))), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
