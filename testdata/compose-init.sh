#!/bin/sh
# The one-shot `init` service of docker-compose.yml: runs before RabbitMQ and
# the gateway start, and does nothing on later `docker compose up`s.
#
# It makes the gateway's RabbitMQ password itself, at random, and puts it in
# two places only: the keyring (encrypted to a master key in a volume of its
# own) and RabbitMQ's definitions (hashed). No person, environment variable,
# log or command line ever holds it. The definitions give that user only what
# the gateway needs (see the permissions below) and create an administrator
# for the management UI whose password, BROKER_ADMIN_PASSWORD, reaches this
# container alone and is stored only hashed.
#
# Every step must succeed: a failed `keyring set` fails the service, and
# compose then starts neither RabbitMQ nor the gateway.
set -eu
umask 077

: "${WSBRIDGE:=/out/wsbridge}"
: "${KEYRING:=/keyring/wsbridge.keyring}"
: "${KEY_FILE:=/keyring-key/master.key}"
: "${DEFINITIONS:=/definitions/definitions.json}"
: "${KEYRING_ENTRY:=rabbit}"
: "${GATEWAY_USER:=wsbridge}"
: "${ADMIN_USER:=admin}"
: "${GATEWAY_UID:=65532}" # distroless nonroot, the gateway's user
: "${BROKER_UID:=999}"    # the rabbitmq image's rabbitmq user

# What the gateway does on RabbitMQ for testdata/compose.yaml, and no more:
# STOMP /topic/ subscriptions declare stomp-subscription-* queues bound to
# amq.topic, SSE streams declare server-named amq.gen-* queues bound to it,
# STOMP SEND to /topic/ and HTTP publish write to amq.topic. A client of
# /stomp asking for /queue/x or another exchange is refused by RabbitMQ.
# Regular expressions, in JSON (hence the doubled backslashes).
configure='^(stomp-subscription-.*|amq\\.gen-.*)$'
write='^(amq\\.topic|stomp-subscription-.*|amq\\.gen-.*)$'
read='^(amq\\.topic|stomp-subscription-.*|amq\\.gen-.*)$'

say() { printf 'init: %s\n' "$*"; }
fail() { printf 'init: %s\n' "$*" >&2; exit 1; }

if [ -s "$DEFINITIONS" ] && [ -s "$KEYRING" ]; then
	say "already done ($KEYRING, $DEFINITIONS); \`docker compose down -v\` starts over"
	exit 0
fi
[ -n "${BROKER_ADMIN_PASSWORD:-}" ] ||
	fail "set BROKER_ADMIN_PASSWORD (the RabbitMQ management UI's password for $ADMIN_USER) for the first \`docker compose up\`"
for name in "$GATEWAY_USER" "$ADMIN_USER" "$KEYRING_ENTRY"; do
	case $name in
	'' | *[!A-Za-z0-9_.-]*) fail "names are letters, digits, _ . - only: got \"$name\"" ;;
	esac
done

# rabbit_password_hashing_sha256, RabbitMQ's default: base64(salt ++
# sha256(salt ++ password)) with a 4-byte random salt. printf is a shell
# builtin, so the password is on no command line.
rabbit_hash() {
	work=$(mktemp -d)
	head -c 4 /dev/urandom >"$work/salt"
	{ cat "$work/salt"; printf '%s' "$1"; } | openssl dgst -sha256 -binary >"$work/digest"
	cat "$work/salt" "$work/digest" | base64 | tr -d '\n'
	rm -rf "$work"
}

export WSBRIDGE_KEYRING="$KEYRING" WSBRIDGE_KEYRING_KEY_FILE="$KEY_FILE"
[ -s "$KEYRING" ] || "$WSBRIDGE" keyring init
password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
[ ${#password} -ge 24 ] || fail "could not make a random password"
printf '%s\n' "$password" | "$WSBRIDGE" keyring set "$KEYRING_ENTRY" -username "$GATEWAY_USER" -password-stdin
gateway_hash=$(rabbit_hash "$password")
admin_hash=$(rabbit_hash "$BROKER_ADMIN_PASSWORD")
unset password BROKER_ADMIN_PASSWORD

tmp="$DEFINITIONS.tmp"
cat >"$tmp" <<EOF
{
  "vhosts": [{"name": "/"}],
  "users": [
    {"name": "$GATEWAY_USER", "password_hash": "$gateway_hash", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""},
    {"name": "$ADMIN_USER", "password_hash": "$admin_hash", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"}
  ],
  "permissions": [
    {"user": "$GATEWAY_USER", "vhost": "/", "configure": "$configure", "write": "$write", "read": "$read"},
    {"user": "$ADMIN_USER", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
EOF
if [ "$(id -u)" = 0 ]; then
	chown "$BROKER_UID:$BROKER_UID" "$tmp"
	chown "$GATEWAY_UID:$GATEWAY_UID" "$KEYRING" "$KEY_FILE"
fi
mv "$tmp" "$DEFINITIONS"
say "RabbitMQ user $GATEWAY_USER (password in keyring entry $KEYRING_ENTRY only) and administrator $ADMIN_USER defined in $DEFINITIONS"
