#!/usr/bin/env bash
# The side-by-side benchmark behind docs/benchmarks.md, in one run on this
# machine's brokers: wsbridge against what a user would otherwise deploy
# (RabbitMQ's Web-STOMP plugin, Mosquitto's WebSocket listener), against a
# bare WebSocket->TCP relay (the in-run ceiling for any relay) and against
# clients talking to the broker directly over TCP.
#
#   bash cmd/wsbench/compare.sh       # ROUNDS=3 LAT_ROUNDS=6 DURATION=8s RATE=5000 ~30 minutes
#
# Systems alternate (A B C D, B C D A, ... ROUNDS times) and the reports give medians
# and ratios: the machine is shared and noisy. Brokers are pinned to core 0
# and everything else to core 1, the production shape where the gateway's
# CPU does not come out of the broker's share. Raw results go to
# artifacts/bench/*.jsonl; the report and its charts to docs/benchmarks.md
# and docs/img/. Web-STOMP is enabled for the run and disabled after if it
# was off; CPU affinity is restored; a second Mosquitto (TCP 19884,
# WebSocket 19883) serves the MQTT rounds and is stopped after.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
RATE=${RATE:-5000}
# Latency at RATE varies more from run to run than throughput does (single
# p99s of one system spread 1.6-4 ms here), so it gets more rounds.
LAT_ROUNDS=${LAT_ROUNDS:-6}
LOGIN=${LOGIN:-guest} PASSCODE=${PASSCODE:-guest}
# Idle connections: RabbitMQ here runs with 1,024 file descriptors, so its
# rounds stay well below; one process may hold 20,000, so the gateway
# relaying MQTT (two sockets a connection) holds at most ~9,900.
CONNS_EMBEDDED=${CONNS_EMBEDDED:-19000}
CONNS_RABBIT=${CONNS_RABBIT:-500}
CONNS_MQTT=${CONNS_MQTT:-5000}
SSE_CLIENTS=${SSE_CLIENTS:-1000}
out=artifacts/bench
docs=docs
mkdir -p "$out" "$docs/img"
go build -o "$out/wsbridge" ./cmd/wsbridge
go build -o "$out/wsbench" ./cmd/wsbench

wait_port() { # port
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2
  return 1
}

rabbit=$(pgrep -f beam.smp | head -1)
mosquitto=$(pgrep -x mosquitto | head -1)
# Web-STOMP depends on the STOMP plugin: enabling it only implicitly would
# let the disable at the end take the STOMP listener (61613) down with it.
web_stomp_was_on=$(rabbitmq-plugins list -E -m 2>/dev/null | grep -cx rabbitmq_web_stomp || true)
all_cores=0-$(($(nproc) - 1))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  taskset -a -p -c "$all_cores" "$rabbit" >/dev/null || true
  taskset -a -p -c "$all_cores" "$mosquitto" >/dev/null || true
  [ "$web_stomp_was_on" = 1 ] || rabbitmq-plugins disable rabbitmq_web_stomp >/dev/null
}
trap cleanup EXIT
rabbitmq-plugins enable rabbitmq_stomp rabbitmq_web_stomp >/dev/null
taskset -a -p -c 0 "$rabbit" >/dev/null
taskset -a -p -c 0 "$mosquitto" >/dev/null

# Without set_tcp_nodelay Mosquitto's TCP sends wait on Nagle's algorithm
# (~30 ms p99 at 5,000 msg/s for every system that uses its TCP port).
cat > "$out/mosquitto.conf" <<CONF
set_tcp_nodelay true
listener 19884 127.0.0.1
allow_anonymous true
listener 19883 127.0.0.1
protocol websockets
allow_anonymous true
CONF
start_mosquitto() { # a fresh instance, so that its RSS counts only what follows
  [ -z "${mosquitto_ws:-}" ] || { kill "$mosquitto_ws"; wait "$mosquitto_ws" 2>/dev/null || true; }
  taskset -c 0 mosquitto -c "$out/mosquitto.conf" 2>>"$out/mosquitto.log" & pids+=($!)
  mosquitto_ws=$!
  wait_port 19884 && wait_port 19883
}
start_mosquitto

# The gateway logs in to RabbitMQ with a keyring entry, as in production.
rm -f "$out/bench.keyring" "$out/bench.keyring.key"
export WSBRIDGE_KEYRING="$out/bench.keyring" WSBRIDGE_KEYRING_KEY_FILE="$out/bench.keyring.key" WSBRIDGE_KEYRING_KEY=
"$out/wsbridge" keyring init >/dev/null
printf '%s\n' "$PASSCODE" | "$out/wsbridge" keyring set rabbit -username "$LOGIN" -password-stdin >/dev/null

limits='limits: {max_connections: 20000, max_connections_per_ip: 20000, handshakes_per_second: 100000, handshake_burst: 100000}'
cat > "$out/gateway.yaml" <<YAML
listen: "127.0.0.1:18080"
admin: {listen: "127.0.0.1:19090"}
log: {level: warn}
$limits
backends:
  rabbitmq: {protocol: stomp, address: 127.0.0.1:61613, credential: rabbit}
  rabbitmq-amqp: {protocol: amqp, address: 127.0.0.1:5672, credential: rabbit}
  mosquitto: {protocol: mqtt, address: 127.0.0.1:19884}
routes:
  - {path: /stomp, protocol: stomp, backend: rabbitmq}
  - {path: /amqp, protocol: amqp, backend: rabbitmq-amqp}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
YAML
# SSE on embedded NATS: no broker process, so the gateway gets core 0 (the
# brokers idle meanwhile) and the load tool core 1.
cat > "$out/sse.yaml" <<YAML
listen: "127.0.0.1:18082"
log: {level: warn}
$limits
backends:
  nats: {protocol: nats, embedded: true, address: 127.0.0.1:14222}
routes:
  - {path: /sse, protocol: sse, backend: nats}
  - {path: /publish, protocol: publish, backend: nats}
YAML
# The embedded default with room for the connection count.
{ sed -e 's/^listen: .*/listen: "127.0.0.1:18081"/' cmd/wsbridge/default.yaml
  printf 'admin: {listen: "127.0.0.1:19091"}\nlog: {level: warn}\n%s\n' "$limits"; } > "$out/embedded.yaml"

start_gateway() { # config [core]
  taskset -c "${2:-1}" "$out/wsbridge" -config "$1" 2>>"$out/gateway.log" & pids+=($!)
}
start_gateway "$out/gateway.yaml"
gateway=$!
taskset -c 1 "$out/wsbench" baseline-relay -listen 127.0.0.1:9001 -target 127.0.0.1:61613 2>/dev/null & pids+=($!)
taskset -c 1 "$out/wsbench" baseline-relay -listen 127.0.0.1:9002 -target 127.0.0.1:19884 2>/dev/null & pids+=($!)
taskset -c 1 "$out/wsbench" baseline-relay -listen 127.0.0.1:9003 -target 127.0.0.1:5672 2>/dev/null & pids+=($!)
for port in 18080 19090 9001 9002 9003 15674 19883 19884; do wait_port "$port"; done

bench() { # scenario label url [flags]: one run, appended to $file
  taskset -c 1 "$out/wsbench" "$1" -label "$2" -url "$3" "${@:4}" 2>>"$out/runs.log" >>"$file"
  echo "$1 $2 done" >&2
}

# Each round starts one system later than the last (A B C D, B C D A, ...):
# a run is disturbed by the broker still cleaning up after the one before
# it, and with a fixed order that would fall on the same system each time.
compare() { # scenario results "label=url ..." [flags]: each system in turn, ROUNDS times at full speed and LAT_ROUNDS times at RATE
  local scenario=$1 systems
  read -r -a systems <<< "$3"
  file="$out/$2.jsonl"; shift 3; : > "$file"
  for rate in 0 "$RATE"; do
    local rounds=$ROUNDS
    [ "$rate" = 0 ] || rounds=$LAT_ROUNDS
    for round in $(seq 0 $((rounds - 1))); do
      for i in "${!systems[@]}"; do
        local sys=${systems[$(((i + round) % ${#systems[@]}))]}
        bench "$scenario" "${sys%%=*}" "${sys#*=}" -rate "$rate" -duration "$DURATION" "$@"
      done
    done
  done
}
compare stomp-pubsub stomp "direct=tcp://127.0.0.1:61613 bare-relay=ws://127.0.0.1:9001/ wsbridge=ws://127.0.0.1:18080/stomp web-stomp=ws://127.0.0.1:15674/ws" \
  -login "$LOGIN" -passcode "$PASSCODE"
compare mqtt-pubsub mqtt "direct=tcp://127.0.0.1:19884 bare-relay=ws://127.0.0.1:9002/ wsbridge=ws://127.0.0.1:18080/mqtt mosquitto-ws=ws://127.0.0.1:19883/" \
  -qos 0 -window 1024
compare amqp-pubsub amqp "direct=tcp://127.0.0.1:5672 bare-relay=ws://127.0.0.1:9003/ wsbridge=ws://127.0.0.1:18080/amqp" \
  -login "$LOGIN" -passcode "$PASSCODE"

file="$out/sse.jsonl"; : > "$file"
start_gateway "$out/sse.yaml" 0
sse_gateway=$!
wait_port 18082
for _ in $(seq "$ROUNDS"); do
  for rate in 100 200 300; do
    bench sse-fanout wsbridge http://127.0.0.1:18082 -clients "$SSE_CLIENTS" -rate "$rate" -duration "$DURATION"
  done
done
kill "$sse_gateway"; wait "$sse_gateway" 2>/dev/null || true

# Idle connections, each wsbridge round on a fresh gateway so that its RSS
# counts only the round's connections.
kill "$gateway"; wait "$gateway" 2>/dev/null || true
conns() { # label config-or-pid url mode n [flags]
  local label=$1 server=$2 url=$3 mode=$4 n=$5 measure
  shift 5
  if [ -f "$server" ]; then
    start_gateway "$server"
    local gw=$!
    local admin; admin=$(sed -n 's/^admin: {listen: "\(.*\)"}/\1/p' "$server")
    wait_port "${admin##*:}"; wait_port "$(sed -n 's/^listen: "127.0.0.1:\(.*\)"/\1/p' "$server")"
    measure=(-stats "http://$admin/debug/stats" -gc)
  else
    measure=(-pid "$server")
  fi
  taskset -c 1 "$out/wsbench" conns -label "$label" -url "$url" -mode "$mode" -n "$n" -ramp 2000 -sources 32 -hold 10s \
    "${measure[@]}" "$@" 2>>"$out/runs.log" >>"$file"
  echo "conns $label done" >&2
  if [ -f "$server" ]; then kill "$gw"; wait "$gw" 2>/dev/null || true; fi
  sleep 2 # let the server let go of the closed connections
}
file="$out/conns-embedded.jsonl"; : > "$file"
for _ in $(seq "$ROUNDS"); do
  conns "wsbridge (embedded default)" "$out/embedded.yaml" ws://127.0.0.1:18081/stomp stomp "$CONNS_EMBEDDED"
done
file="$out/conns-stomp.jsonl"; : > "$file"
for _ in $(seq "$ROUNDS"); do
  conns "wsbridge -> RabbitMQ" "$out/gateway.yaml" ws://127.0.0.1:18080/stomp stomp "$CONNS_RABBIT"
  conns web-stomp "$rabbit" ws://127.0.0.1:15674/ws stomp "$CONNS_RABBIT" -login "$LOGIN" -passcode "$PASSCODE"
done
file="$out/conns-mqtt.jsonl"; : > "$file"
for _ in $(seq "$ROUNDS"); do
  conns "wsbridge -> Mosquitto" "$out/gateway.yaml" ws://127.0.0.1:18080/mqtt mqtt "$CONNS_MQTT"
  start_mosquitto
  conns mosquitto-ws "$mosquitto_ws" ws://127.0.0.1:19883/ mqtt "$CONNS_MQTT"
done

report() { # title baseline file chart
  "$out/wsbench" report -title "$1" -baseline "$2" -chart "$docs/img/$4.png" "$out/$3.jsonl"
}
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no -- . ':!docs' | grep -q . && echo " (with uncommitted changes)" || true)
{
  cat <<DOC
# wsbridge benchmarks

Generated by \`bash cmd/wsbench/compare.sh\` on $(date -u +%Y-%m-%d) at commit \`$commit\`$dirty:
$ROUNDS alternated rounds of ${DURATION} per system at full speed, $LAT_ROUNDS at ${RATE} msg/s (latency varies
more from run to run); each table gives the median of the rounds and its ratio to the baseline
named in its heading. 1 publisher and 1 subscriber, 128-byte bodies,
unless said otherwise. Raw results: \`artifacts/bench/*.jsonl\` (not committed).

## The machine

- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; memory $(free -g | awk '/^Mem:/ {print $2}') GiB; Linux $(uname -r)
- $(go version | cut -d' ' -f3), RabbitMQ $(rabbitmqctl version 2>/dev/null), $(mosquitto -h 2>/dev/null | head -1)
- Brokers (RabbitMQ, both Mosquittos) pinned to core 0; wsbridge, the bare relays and the load
  tool to core 1, so a gateway's CPU does not come out of the broker's share.

## What is compared

- **direct**: the load tool speaks the protocol to the broker over TCP: the ceiling for any relay.
- **bare-relay**: \`wsbench baseline-relay\`, WebSocket in, TCP out, no parsing: what relaying alone
  costs. What wsbridge costs beyond it is its own work (validation, credential injection, limits).
- **wsbridge**: the gateway relaying to the same broker, logging in with a keyring credential.
- **web-stomp** (RabbitMQ's Web-STOMP plugin) and **mosquitto-ws** (Mosquitto's WebSocket
  listener): what a user would deploy instead.

## STOMP to RabbitMQ

![STOMP](img/stomp.png)
$(report "STOMP" web-stomp stomp stomp)

Against the bare relay:
$("$out/wsbench" report -baseline bare-relay "$out/stomp.jsonl")

## MQTT QoS 0 to Mosquitto

Window 1,024 messages. Every system talks to the same Mosquitto instance (TCP 19884, WebSocket 19883,
\`set_tcp_nodelay true\`). At full speed the ceiling for everything that enters Mosquitto by its TCP
port (direct, bare relay, wsbridge) is Mosquitto's own TCP path on its one core, not the relay: there
Mosquitto 2.0.11 makes a read and two epoll_ctl calls per message (strace, 30,000 messages), while its
WebSocket listener reads ~10 messages per recv, so it goes faster than its own TCP port.

![MQTT](img/mqtt.png)
$(report "MQTT QoS 0" bare-relay mqtt mqtt)

## AMQP 0-9-1 to RabbitMQ

Each subscriber's queue is bound to \`amq.topic\`; consumed without acks. RabbitMQ has no AMQP
over WebSocket of its own to compare with.

![AMQP](img/amqp.png)
$(report "AMQP" bare-relay amqp amqp)

## Server-Sent Events fan-out

1 topic, $SSE_CLIENTS streams, HTTP publishes at the rate named, embedded NATS; msgs/s counts every
delivery to every stream. The gateway has core 0 to itself here (no broker process; RabbitMQ and
Mosquitto idle), the load tool core 1. Default \`sse.flush_interval\` (20 ms): a busy stream's events
share one write per interval.

![SSE](img/sse.png)
$(report "SSE x$SSE_CLIENTS" wsbridge sse sse)

## Idle connections

Connections opened at 2,000/s from 32 source addresses, held 10 s, then the server's RSS is read
(wsbridge: its admin stats, before and after a GC, which the runtime does by itself within
minutes; RabbitMQ and Mosquitto: /proc of their process). A fresh gateway per round.

$CONNS_EMBEDDED STOMP sessions on the embedded default (STOMP translated onto in-process NATS):

![conns embedded](img/conns-embedded.png)
$(report "embedded default" "wsbridge (embedded default)" conns-embedded conns-embedded)

$CONNS_RABBIT STOMP sessions relayed to RabbitMQ (its 1,024 file descriptors bound the count):

![conns STOMP](img/conns-stomp.png)
$(report "STOMP" web-stomp conns-stomp conns-stomp)

$CONNS_MQTT MQTT sessions relayed to Mosquitto:

![conns MQTT](img/conns-mqtt.png)
$(report "MQTT" mosquitto-ws conns-mqtt conns-mqtt)
DOC
} > "$docs/benchmarks.md"
echo "wrote $docs/benchmarks.md" >&2
