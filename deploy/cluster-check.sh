#!/usr/bin/env bash
# Cluster mode from the release binaries, the way an operator runs it:
# three nats-servers from deploy/nats/ (clustered, JetStream, replicas 3),
# three `origin` nodes from deploy/cluster/origin-N.toml, one `relay` from
# deploy/cluster/relay.toml linked to all three, and the SDK's examples as
# two hosts and gifters. Checks:
#   1. every origin node and the relay answer /readyz, and the relay has a
#      link to each of the three nodes;
#   2. the hosts of rooms 1 and 2 open them and start a 30 s PK battle
#      (room 2 comes to room 1's node for it), and a viewer's 10 gifts in
#      room 1 are all applied;
#   3. mid-battle, the node serving both rooms is killed (SIGKILL): the
#      relay keeps two links, and a viewer's next 10 gifts in room 1 and
#      another's 10 in room 2 are all applied (the rooms moved to a
#      survivor together, rebuilt from their logs), each room's total
#      counting every gift once;
#   4. the battle settles on the survivor, its scores equal to the rooms'
#      gift totals.
#
#   nice cargo build --release -p ringside-origin -p ringside-relay -p ringside-client --bins --examples
#   deploy/cluster-check.sh            # about 45 s
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
  [[ -x $exe ]] || setup "no $exe (cargo build --release -p ringside-origin -p ringside-relay -p ringside-client --bins --examples, or set BIN_DIR)"
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

# --- a battle, gifts, its node killed, gifts again, the battle settles -------
token() { "$bin/relay" --config "$tmp/relay.toml" mint-token "$@"; }
client=(--relay 127.0.0.1:4700 --cert "$tmp/relay-cert.pem")
# Room 2's host opens it and accepts the first invitation; room 1's host
# opens room 1 and invites room 2 to a 30 s battle.
"$bin/examples/watch" "${client[@]}" --token "$(token --user 2 --host-of 2)" \
  --room 2 --open 1 --accept 1 --seconds 120 > "$tmp/host-2.log" 2>&1 &
pid[host-2]=$!
until_ok 20 grep -q '^opened' "$tmp/host-2.log" || die "the host could not open room 2"
"$bin/examples/watch" "${client[@]}" --token "$(token --user 1 --host-of 1)" \
  --room 1 --open 1 --invite 2 --pk-secs 30 --seconds 120 > "$tmp/host-1.log" 2>&1 &
pid[host-1]=$!
until_ok 20 grep -q '^opened' "$tmp/host-1.log" || die "the host could not open room 1"
until_ok 20 grep -q '^accepted battle .*Applied' "$tmp/host-2.log" \
  || die "no battle: $(grep -h '^invited\|^accepted' "$tmp"/host-*.log)"
say "rooms 1 and 2 open, a PK battle between them running"
# gifts USER ROOM WANT: 10 gifts by USER in ROOM, all applied; ROOM then
# counts WANT gifts, worth total[ROOM].
declare -A total
gifts() {
  local out=$tmp/gifter-$1.log
  timeout 60 "$bin/examples/gifter" "${client[@]}" --token "$(token --user "$1")" \
    --room "$2" --gifts 10 > "$out" 2>&1 || die "gifter $1 failed: $(tail -n 3 "$out")"
  local applied
  applied=$(grep -c 'Applied' "$out" || true)
  [[ $applied == 10 ]] || die "gifter $1: $applied of 10 gifts applied"
  local want=$3 count
  count=$(sed -n 's/^room total [0-9]* from \([0-9]*\) gifts.*/\1/p' "$out")
  [[ $count == "$want" ]] || die "room $2 counts $count gifts, not $want"
  total[$2]=$(sed -n 's/^room total \([0-9]*\) from.*/\1/p' "$out")
  say "gifter $1: 10 gifts applied; room $2 counts $count gifts worth ${total[$2]}"
}
gifts 7 1 10
# The node serving both battle rooms: the one whose metrics count two.
live_on() {
  curl -sf "http://127.0.0.1:947$1/metrics" \
    | awk '$1 ~ /^ringside_rooms_live/ { s += $2 } END { print s + 0 }'
}
owner=
find_owner() {
  local i
  for i in 1 2 3; do
    if (( $(live_on "$i") >= 2 )); then owner=$i; return 0; fi
  done
  return 1
}
until_ok 10 find_owner || die "no origin node serves both battle rooms"
find_owner
killed=$(date +%s%N)
{ kill -KILL "${pid[origin-$owner]}" && wait "${pid[origin-$owner]}"; } 2>/dev/null || true
unset "pid[origin-$owner]"
say "killed origin-$owner mid-battle (SIGKILL): it served rooms 1 and 2"
until_ok 10 links_are 2 || die "the relay has $(links) links after the kill, not 2"
gifts 8 1 20
say "room 1 moved to a survivor: the second gifter (connect, then 10 gifts 100 ms apart) done $(( ($(date +%s%N) - killed) / 1000000 )) ms after the kill"
gifts 9 2 10
# The battle settles on the survivor (30 s from its start), its scores
# the rooms' gift totals: every gift counted once, on both sides.
settled() { grep -q 'PkSettled' "$tmp/host-1.log"; }
until_ok 45 settled || die "the battle did not settle within 45 s"
scores=$(grep -o 'PkSettled.*scores: \[[0-9]*, [0-9]*\]' "$tmp/host-1.log" | tail -n1 \
  | grep -o '\[[0-9]*, [0-9]*\]$')
[[ $scores == "[${total[1]}, ${total[2]}]" ]] \
  || die "the battle settled $scores; the rooms' gifts are worth [${total[1]}, ${total[2]}]"
say "the battle settled $scores on the survivor: every gift counted once"
say "all checks passed"
