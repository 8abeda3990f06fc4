#!/usr/bin/env bash
# Two federated Homing servers on loopback and two people talking through
# the `homing` CLI. Run from the repository root:
#
#   bash examples/two-servers.sh
#
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail

cargo build --release --bins --quiet
bin="$(pwd)/target/release"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Both servers are on loopback: plain HTTP, and loopback addresses allowed
# (federation refuses loopback and private addresses by default).
start_server() { # name port
  local dir="$work/$1"
  mkdir -p "$dir"
  HOMING__SERVER__NAME="127.0.0.1:$2" \
  HOMING__SERVER__BIND="127.0.0.1:$2" \
  HOMING__SERVER__DATA_DIR="$dir" \
  HOMING__FEDERATION__ALLOW_INSECURE_HTTP=true \
  HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES=true \
  HOMING__LOG__FILTER=warn \
    "$bin/homingd" >"$dir/log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$2/readyz')" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server $1 did not start; see $dir/log" >&2
  exit 1
}

port_a=$(free_port)
port_b=$(free_port)
start_server a "$port_a"
start_server b "$port_b"
echo "servers: 127.0.0.1:$port_a and 127.0.0.1:$port_b"

alice() { "$bin/homing" --home "$work/alice" --insecure-http "$@"; }
bob() { "$bin/homing" --home "$work/bob" --insecure-http "$@"; }

alice init "alice@127.0.0.1:$port_a" >/dev/null
bob init "bob@127.0.0.1:$port_b" >/dev/null

alice send "bob@127.0.0.1:$port_b" --text "Hello Bob, this crossed two servers."
for _ in $(seq 1 50); do
  out=$(bob inbox --new)
  if [ "$out" != "no messages" ]; then echo "bob's inbox: $out"; break; fi
  sleep 0.2
done
bob send "alice@127.0.0.1:$port_a" --text "Hi Alice, got it."
for _ in $(seq 1 50); do
  out=$(alice inbox --new)
  if [ "$out" != "no messages" ]; then echo "alice's inbox: $out"; break; fi
  sleep 0.2
done
