#!/usr/bin/env bash
# Side by side, in one run: STOMP pub/sub straight to RabbitMQ (the
# ceiling), through a bare WebSocket->TCP relay (what relaying alone
# costs), through wsbridge, and through RabbitMQ's Web-STOMP plugin; then
# MQTT QoS 0 straight to Mosquitto, through a bare relay and through
# wsbridge.
# Systems alternate (A B C D, ROUNDS times) with the broker pinned to core
# 0 and everything else to core 1, at full speed and at a fixed rate.
# Results go to artifacts/bench/{stomp,mqtt}.jsonl; the reports (medians,
# ratios against Web-STOMP and against the bare relay) to standard output.
#
#   bash cmd/wsbench/compare.sh            # ROUNDS=3 DURATION=8s RATE=5000
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
RATE=${RATE:-5000}
LOGIN=${LOGIN:-guest} PASSCODE=${PASSCODE:-guest}
out=artifacts/bench
mkdir -p "$out"
go build -o "$out/wsbridge" ./cmd/wsbridge
go build -o "$out/wsbench" ./cmd/wsbench

rabbit=$(pgrep -f beam.smp | head -1)
web_stomp_was_on=$(rabbitmq-plugins list -e -m 2>/dev/null | grep -cx rabbitmq_web_stomp || true)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  taskset -a -p -c 0-$(($(nproc) - 1)) "$rabbit" >/dev/null || true
  [ "$web_stomp_was_on" = 1 ] || rabbitmq-plugins disable rabbitmq_web_stomp >/dev/null
}
trap cleanup EXIT
[ "$web_stomp_was_on" = 1 ] || rabbitmq-plugins enable rabbitmq_web_stomp >/dev/null
taskset -a -p -c 0 "$rabbit" >/dev/null

cat > "$out/gateway.yaml" <<YAML
listen: "127.0.0.1:18080"
log: {level: warn}
limits: {handshakes_per_second: 1000, handshake_burst: 1000}
backends:
  rabbitmq: {protocol: stomp, address: 127.0.0.1:61613}   # RabbitMQ's STOMP default_user
  mosquitto: {protocol: mqtt, address: 127.0.0.1:1883}
routes:
  - {path: /stomp, protocol: stomp, backend: rabbitmq}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
YAML
taskset -c 1 "$out/wsbridge" -config "$out/gateway.yaml" 2>"$out/gateway.log" & pids+=($!)
taskset -c 1 "$out/wsbench" baseline-relay -listen 127.0.0.1:9001 -target 127.0.0.1:61613 2>/dev/null & pids+=($!)
taskset -c 1 "$out/wsbench" baseline-relay -listen 127.0.0.1:9002 -target 127.0.0.1:1883 2>/dev/null & pids+=($!)
for port in 18080 9001 9002 15674; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

: > "$out/stomp.jsonl"
for rate in 0 "$RATE"; do
  for round in $(seq "$ROUNDS"); do
    for sys in direct bare-relay wsbridge web-stomp; do
      case $sys in
        direct) url=tcp://127.0.0.1:61613 ;;
        bare-relay) url=ws://127.0.0.1:9001/ ;;
        wsbridge) url=ws://127.0.0.1:18080/stomp ;;
        web-stomp) url=ws://127.0.0.1:15674/ws ;;
      esac
      taskset -c 1 "$out/wsbench" stomp-pubsub -label "$sys" -url "$url" -login "$LOGIN" -passcode "$PASSCODE" \
        -rate "$rate" -duration "$DURATION" 2>>"$out/stomp.log" >>"$out/stomp.jsonl"
      echo "round $round rate $rate: $sys done" >&2
    done
  done
done
mosquitto=$(pgrep -x mosquitto | head -1)
taskset -a -p -c 0 "$mosquitto" >/dev/null
: > "$out/mqtt.jsonl"
for round in $(seq "$ROUNDS"); do
  for sys in direct bare-relay wsbridge; do
    case $sys in
      direct) url=tcp://127.0.0.1:1883 ;;
      bare-relay) url=ws://127.0.0.1:9002/ ;;
      wsbridge) url=ws://127.0.0.1:18080/mqtt ;;
    esac
    taskset -c 1 "$out/wsbench" mqtt-pubsub -label "$sys" -url "$url" -qos 0 -window 1024 -duration "$DURATION" \
      2>>"$out/mqtt.log" >>"$out/mqtt.jsonl"
    echo "mqtt round $round: $sys done" >&2
  done
done
taskset -a -p -c 0-$(($(nproc) - 1)) "$mosquitto" >/dev/null

echo "# STOMP, 1 publisher / 1 subscriber, 128-byte bodies, window 256; $(nproc) cores, broker on core 0"
"$out/wsbench" report -baseline web-stomp "$out/stomp.jsonl"
echo
echo "# MQTT QoS 0, 1 publisher / 1 subscriber, 128-byte bodies, window 1024; Mosquitto on core 0"
"$out/wsbench" report -baseline bare-relay "$out/mqtt.jsonl"
