#!/usr/bin/env bash
# 1 MiB application messages round-tripped by the real npm clients, through
# the gateway and through what a user would otherwise deploy, in one run:
#   stompjs      -> wsbridge /stomp -> RabbitMQ STOMP   vs  stompjs -> Web-STOMP (15674)
#   mqtt.js 4, 5 -> wsbridge /mqtt  -> Mosquitto TCP    vs  mqtt.js -> Mosquitto's WebSocket listener
#   amqp-client  -> wsbridge /amqp  -> RabbitMQ AMQP    vs  amqp-client -> RabbitMQ TCP (no WebSocket at all)
#   fetch POST /publish -> SSE stream on the embedded NATS (no peer to compare)
# Each line is one client publishing N messages, each after the previous one
# came back, checked byte for byte (SHA-256); the ratio is the peer's time per
# round trip over the gateway's. Needs `npm ci --prefix testdata/e2e`.
#
#   bash cmd/wsbench/sizes.sh            # SIZE=1048576 N=20 N_SLOW=2, a few minutes
#
# Web-STOMP is enabled for the run and disabled after if it was off; a second
# Mosquitto (TCP 19884, WebSocket 19883) serves the MQTT rows and is stopped after.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SIZE=${SIZE:-1048576}
N=${N:-20}
N_SLOW=${N_SLOW:-2} # Mosquitto's WebSocket listener takes tens of seconds per MiB
LOGIN=${LOGIN:-guest} PASSCODE=${PASSCODE:-guest}
out=artifacts/sizes
mkdir -p "$out"
go build -o "$out/wsbridge" ./cmd/wsbridge

wait_port() { # port
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2
  return 1
}

# Web-STOMP depends on the STOMP plugin: enabling it only implicitly would
# let the disable at the end take the STOMP listener (61613) down with it.
web_stomp_was_on=$(rabbitmq-plugins list -E -m 2>/dev/null | grep -cx rabbitmq_web_stomp || true)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "$web_stomp_was_on" = 1 ] || rabbitmq-plugins disable rabbitmq_web_stomp >/dev/null
}
trap cleanup EXIT
rabbitmq-plugins enable rabbitmq_stomp rabbitmq_web_stomp >/dev/null

cat > "$out/mosquitto.conf" <<CONF
set_tcp_nodelay true
listener 19884 127.0.0.1
allow_anonymous true
listener 19883 127.0.0.1
protocol websockets
allow_anonymous true
CONF
mosquitto -c "$out/mosquitto.conf" 2>>"$out/mosquitto.log" & pids+=($!)

rm -f "$out/sizes.keyring" "$out/sizes.keyring.key"
export WSBRIDGE_KEYRING="$out/sizes.keyring" WSBRIDGE_KEYRING_KEY_FILE="$out/sizes.keyring.key" WSBRIDGE_KEYRING_KEY=
"$out/wsbridge" keyring init >/dev/null
printf '%s\n' "$PASSCODE" | "$out/wsbridge" keyring set rabbit -username "$LOGIN" -password-stdin >/dev/null

# Every limit at its default: this is what a user gets.
cat > "$out/gateway.yaml" <<YAML
listen: "127.0.0.1:18085"
log: {level: warn}
backends:
  rabbitmq: {protocol: stomp, address: 127.0.0.1:61613, credential: rabbit}
  rabbitmq-amqp: {protocol: amqp, address: 127.0.0.1:5672, credential: rabbit}
  mosquitto: {protocol: mqtt, address: 127.0.0.1:19884}
  nats: {protocol: nats, embedded: true, address: 127.0.0.1:14225}
routes:
  - {path: /stomp, protocol: stomp, backend: rabbitmq}
  - {path: /amqp, protocol: amqp, backend: rabbitmq-amqp}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
  - {path: /sse, protocol: sse, backend: nats}
  - {path: /publish, protocol: publish, backend: nats}
YAML
"$out/wsbridge" -config "$out/gateway.yaml" 2>>"$out/gateway.log" & pids+=($!)
for port in 18085 15674 19883 19884; do wait_port "$port"; done

node=(node testdata/e2e/sizes.mjs)
ms() { # mode args...: the client's ms per round trip, or the failure
  local line
  line=$(DEADLINE_MS=${DEADLINE_MS:-600000} "${node[@]}" "$@" 2>&1 | tail -1) || true
  case $line in
    OK*) sed -n 's/.*ms_per_round_trip=\([0-9.]*\).*/\1/p' <<<"$line" ;;
    *) echo "failed: ${line:-no output}" >&2; echo "-" ;;
  esac
}
row() { # label gateway_ms peer_label peer_ms
  local ratio=-
  if [[ $2 != - && $4 != - ]]; then ratio=$(awk -v g="$2" -v p="$4" 'BEGIN { printf "%.2f", p / g }'); fi
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$ratio"
}
dest="/queue/wsbridge-sizes-$$"
echo "SIZE=$SIZE bytes, N=$N round trips (N_SLOW=$N_SLOW against Mosquitto's WebSocket listener)"
echo
echo '| client | wsbridge ms/round trip | peer | peer ms/round trip | peer / wsbridge |'
echo '|---|---|---|---|---|'
# Text bodies: Web-STOMP sends text WebSocket frames, which cannot carry other bytes.
row "@stomp/stompjs (text body)" "$(BODY=text ms stomp ws://127.0.0.1:18085/stomp "$dest" "$N")" \
  "Web-STOMP" "$(BODY=text ms stomp ws://127.0.0.1:15674/ws "$dest" "$N" "$LOGIN" "$PASSCODE")"
for v in 4 5; do
  row "mqtt.js protocol $v" "$(ms mqtt ws://127.0.0.1:18085/mqtt "$v" "$N")" \
    "Mosquitto WebSocket" "$(ms mqtt ws://127.0.0.1:19883 "$v" "$N_SLOW")"
done
row "@cloudamqp/amqp-client" "$(ms amqp ws://127.0.0.1:18085/amqp "$N")" \
  "RabbitMQ TCP (no WebSocket)" "$(ms amqp-tcp 127.0.0.1 5672 "$LOGIN" "$PASSCODE" "$N")"
row "fetch POST /publish + SSE" "$(ms sse http://127.0.0.1:18085 "wsbridge.sizes.$$" "$N")" "-" "-"
