#!/usr/bin/env bash
# Cluster mode from the release binaries, the way an operator runs it:
# three nats-servers from deploy/nats/ (clustered, JetStream, replicas 3),
# three `origin` nodes from deploy/cluster/origin-N.toml, one `relay` from
# deploy/cluster/relay.toml linked to all three, and the SDK's examples as
# a host and a gifter. Checks:
#   1. every origin node and the relay answer /readyz, and the relay has a
#      link to each of the three nodes;
#   2. a host opens room 1 and a viewer's 10 gifts are all applied;
#   3. the node serving room 1 is killed (SIGKILL): the relay keeps two
#      links, and a viewer's next 10 gifts are all applied (the room moved
#      to a survivor, rebuilt from its log), the room's total counting
#      every gift once.
#
#   nice cargo build --release -p ringside-origin -p ringside-relay -p ringside-client --examples
#   deploy/cluster-check.sh            # about 30 s
#
# The shipped files are used unchanged except for their paths
# (/var/lib/ringside becomes a temporary directory) and, on nats-server
# older than 2.10, the `sync_interval` line (2.9 refuses it; see
# deploy/nats/README.md for what that costs). The shipped ports must be
# free (NATS 4222-4224, 6222-6224, 8222-8224; origins 4601-4603 and
# 9471-9473; relay 4700 and 9480). Every wait is bounded; everything
# started is killed and the temporary directory removed on exit.
# Exit 0: all checks passed; 1: a check failed; 2: a setup problem.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
nats=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
started=$(date +%s)

say() { printf 'cluster-check: %s\n' "$*"; }
die() { printf 'cluster-check: FAILED: %s\n' "$*" >&2; exit 1; }
setup() { printf 'cluster-check: SETUP: %s\n' "$*" >&2; exit 2; }

for exe in "$bin/origin" "$bin/relay" "$bin/examples/watch" "$bin/examples/gifter"; do
  [[ -x $exe ]] || setup "no $exe (cargo build --release -p ringside-origin -p ringside-relay -p ringside-client --examples, or set BIN_DIR)"
done
[[ -x $nats ]] || setup "no nats-server (apt-get install nats-server; Debian puts it in /usr/sbin)"
command -v curl >/dev/null || setup "no curl"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringside-cluster-check.XXXXXX")
declare -A pid
cleanup() {
  local rc=$?
  for p in "${pid[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $rc -ne 0 && -d $tmp ]]; then
    for log in "$tmp"/*.log; do
      [[ -f $log ]] || continue
      printf -- '--- last lines of %s\n' "$(basename "$log")" >&2
      tail -n 12 "$log" | sed 's/\x1b\[[0-9;]*m//g' >&2
    done
  fi
  [[ -n ${KEEP:-} ]] || rm -rf "$tmp"
  say "took $(( $(date +%s) - started )) s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# until SECONDS CMD...: run CMD every 0.1 s until it succeeds or time is up.
until_ok() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < end )) || return 1
    sleep 0.1
  done
}

# --- NATS ----------------------------------------------------------------
version=$("$nats" --version | grep -o '[0-9]\+\.[0-9]\+' | head -n1)
for i in 1 2 3; do
  sed "s#/var/lib/ringside#$tmp#" "$repo/deploy/nats/nats-$i.conf" > "$tmp/nats-$i.conf"
  if [[ $(printf '%s\n2.10\n' "$version" | sort -V | head -n1) != 2.10 ]]; then
    sed -i '/sync_interval/d' "$tmp/nats-$i.conf"
  fi
  "$nats" -c "$tmp/nats-$i.conf" > "$tmp/nats-$i.log" 2>&1 &
  pid[nats-$i]=$!
done
for i in 1 2 3; do
  until_ok 20 curl -sf "http://127.0.0.1:$(( 8221 + i ))/healthz?js-enabled-only=true" \
    || die "nats-$i not ready within 20 s"
done
# JetStream answers requests once the servers elected a meta leader.
meta_leader() { curl -sf http://127.0.0.1:8222/jsz | grep -q '"leader"'; }
until_ok 20 meta_leader || die "no JetStream meta leader within 20 s"
say "three nats-servers ($version) up, JetStream on"

# --- origins and relay -----------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/cluster-secret"
chmod 600 "$tmp/cluster-secret"
for i in 1 2 3; do
  sed "s#/var/lib/ringside#$tmp#" "$here/cluster/origin-$i.toml" > "$tmp/origin-$i.toml"
  "$bin/origin" --config "$tmp/origin-$i.toml" > "$tmp/origin-$i.log" 2>&1 &
  pid[origin-$i]=$!
done
for i in 1 2 3; do
  until_ok 90 curl -sf "http://127.0.0.1:947$i/readyz" || die "origin-$i not ready within 90 s"
done
cat "$tmp"/origin-{1,2,3}/origin-cert.pem > "$tmp/origin-certs.pem"
sed "s#/var/lib/ringside#$tmp#" "$here/cluster/relay.toml" > "$tmp/relay.toml"
"$bin/relay" --config "$tmp/relay.toml" > "$tmp/relay.log" 2>&1 &
pid[relay]=$!
links() {
  curl -sf http://127.0.0.1:9480/metrics \
    | awk '$1 ~ /^ringside_relay_origin_links_up/ { print $2 }'
}
links_are() { [[ $(links) == "$1" ]]; }
until_ok 20 links_are 3 || die "the relay has $(links) links to origin nodes, not 3"
say "three origin nodes ready; the relay links to all three"

# --- a room, gifts, a node killed, gifts again -------------------------------
token() { "$bin/relay" --config "$tmp/relay.toml" mint-token "$@"; }
client=(--relay 127.0.0.1:4700 --cert "$tmp/relay-cert.pem")
"$bin/examples/watch" "${client[@]}" --token "$(token --user 1 --host-of 1)" \
  --room 1 --open 1 --seconds 60 > "$tmp/host.log" 2>&1 &
pid[host]=$!
until_ok 20 grep -q '^opened' "$tmp/host.log" || die "the host could not open room 1"

gifts() {
  local out=$tmp/gifter-$1.log
  timeout 60 "$bin/examples/gifter" "${client[@]}" --token "$(token --user "$1")" \
    --room 1 --gifts 10 > "$out" 2>&1 || die "gifter $1 failed: $(tail -n 3 "$out")"
  local applied
  applied=$(grep -c 'Applied' "$out" || true)
  [[ $applied == 10 ]] || die "gifter $1: $applied of 10 gifts applied"
  local want=$2 count
  count=$(sed -n 's/^room total [0-9]* from \([0-9]*\) gifts.*/\1/p' "$out")
  [[ $count == "$want" ]] || die "room 1 counts $count gifts, not $want"
  say "gifter $1: 10 gifts applied; room 1 counts $count gifts"
}
gifts 7 10
# The node serving room 1: the one whose metrics count a live room.
owner=
for i in 1 2 3; do
  live=$(curl -sf "http://127.0.0.1:947$i/metrics" \
    | awk '$1 ~ /^ringside_rooms_live/ { s += $2 } END { print s + 0 }')
  (( live > 0 )) && owner=$i
done
[[ -n $owner ]] || die "no origin node reports room 1 live"
killed=$(date +%s%N)
{ kill -KILL "${pid[origin-$owner]}" && wait "${pid[origin-$owner]}"; } 2>/dev/null || true
say "killed origin-$owner, which served room 1"
until_ok 10 links_are 2 || die "the relay has $(links) links after the kill, not 2"
gifts 8 20
say "room 1 moved to a survivor: the second gifter (connect, then 10 gifts 100 ms apart) done $(( ($(date +%s%N) - killed) / 1000000 )) ms after the kill"
say "all checks passed"
