#!/usr/bin/env bash
# Every hostile kind at 2,000 clients against a fresh embedded-default
# gateway each (its RSS at rest is part of the bound), ROUNDS times, then a
# table of medians: peak RSS / documented bound and the probe's p99 ratio.
#   bash cmd/wsbench/hostile.sh            # N=2000 ROUNDS=3 PORT=18090
# Results: artifacts/hostile/*.jsonl; gateway logs beside them.
#
# The gateway (with its embedded NATS) is pinned to core 0 and the load
# tool (probe, publisher and hostile clients) to core 1, as compare.sh
# pins brokers and gateway: otherwise the tool's own CPU, which grows
# with the hostile clients, is counted against the gateway's p99. The
# hostile clients run in a child process (-split), so that the kernel
# shares core 1 between them and the probe.
# FANOUT_RATE x FANOUT_BODY is the busy destination's load for
# slow-reader and reader-control, chosen so that the reader control
# itself keeps the probe's p99 within 2x (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-2000} ROUNDS=${ROUNDS:-3} PORT=${PORT:-18090}
KINDS=${KINDS:-"oversize silent fragments partial-frame slow-publish reader-control slow-reader"}
FANOUT_RATE=${FANOUT_RATE:-1} FANOUT_BODY=${FANOUT_BODY:-4096}
GATEWAY_CORE=${GATEWAY_CORE:-0} TOOL_CORE=${TOOL_CORE:-1}
# CONFIG: a gateway config to run instead of the embedded default (to
# compare settings, e.g. websocket.linger_bytes_per_second).
config=()
[ -z "${CONFIG:-}" ] || config=(-config "$CONFIG")
out=${OUT:-artifacts/hostile}
mkdir -p "$out" artifacts/bin
go build -o artifacts/bin/wsbridge ./cmd/wsbridge
go build -o artifacts/bin/wsbench ./cmd/wsbench
for kind in $KINDS; do
	extra=()
	[ "$kind" = fragments ] && extra=(-size 524288)
	case $kind in slow-reader | reader-control) extra=(-fanout-rate "$FANOUT_RATE" -fanout-body "$FANOUT_BODY") ;; esac
	for round in $(seq "$ROUNDS"); do
		taskset -c "$GATEWAY_CORE" artifacts/bin/wsbridge "${config[@]}" -listen "127.0.0.1:$PORT" >"$out/$kind-$round.log" 2>&1 &
		pid=$!
		for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
		taskset -c "$TOOL_CORE" artifacts/bin/wsbench hostile -url "ws://127.0.0.1:$PORT/stomp" -kind "$kind" -n "$N" -pid "$pid" -split \
			-baseline 10s -duration 20s "${extra[@]}" >>"$out/$kind.jsonl" 2>"$out/$kind-$round.txt" || cat "$out/$kind-$round.txt"
		kill "$pid"; wait "$pid" 2>/dev/null || true
	done
done
python3 - "$out" $KINDS <<'PY'
import json, statistics, sys
out, kinds = sys.argv[1], sys.argv[2:]
print("| kind | runs | peak RSS MiB | bound MiB | peak/bound | kernel TCP mem MiB, rest -> peak | probe p99 alone us | beside them us | p99 ratio | probe lost | ended by (last run) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in kinds:
    rs = [json.loads(l) for l in open(f"{out}/{k}.jsonl") if l.startswith("{")]
    med = lambda f: statistics.median(r.get(f, 0) for r in rs)
    ended = ", ".join(f"{v}x {c}" for c, v in sorted(rs[-1]["refusals"].items()))
    print(f"| {k} | {len(rs)} | {med('rss_peak_bytes')/2**20:.0f} | {med('bound_bytes')/2**20:.0f} | {med('peak_over_bound'):.2f} | "
          f"{med('tcp_mem_idle_bytes')/2**20:.0f} -> {med('tcp_mem_peak_bytes')/2**20:.0f} | "
          f"{med('baseline_p99_us'):.0f} | {med('p99_us'):.0f} | {med('p99_ratio'):.2f} | {sum(r['probe_lost'] for r in rs)} | {ended or '-'} |")
PY
