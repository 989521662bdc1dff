#!/usr/bin/env bash
# Live check of the shipped Prometheus files against the real binaries.
#
# Starts an origin and two relays (regions eu and us) from the release
# binaries, idle, with /metrics on the addresses deploy/prometheus/
# prometheus.yml scrapes, then a real Prometheus loading that file and
# ringside-rules.yml unchanged, and checks through its HTTP API:
#   1. every target is up, and every process reports ringside_ready 1;
#   2. every metric name the rules and the dashboard read exists in the
#      scrapes (except the few created on first event), with the label
#      values they match on (kinds, outcomes, classes, regions, nodes);
#   3. after a couple of scrapes, every rule evaluated with health "ok";
#   4. nothing fires, nor is pending, on the healthy idle system;
#   5. one relay killed: RingsideRelayDown goes pending for it, with its
#      region taken from its last series.
#
#   nice cargo build --release -p ringside-origin -p ringside-relay
#   deploy/live-check.sh            # about 65 s
#
# Environment: BIN_DIR (default: $CARGO_TARGET_DIR/release or
# target/release), PROMETHEUS (default: prometheus on PATH). The metrics
# ports are the shipped ones (9464-9466) when free; if one is taken, free
# ports are picked and substituted in the copy of prometheus.yml (only the
# target addresses change). Every wait is bounded; everything started is
# killed and every temporary file removed on exit. Exit 0: all checks
# passed; 1: a check failed (the reason is printed); 2: a setup problem.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
prometheus=${PROMETHEUS:-prometheus}
started=$(date +%s)

say() { printf 'live-check: %s\n' "$*"; }
die() { printf 'live-check: FAILED: %s\n' "$*" >&2; exit 1; }
setup() { printf 'live-check: SETUP: %s\n' "$*" >&2; exit 2; }

for exe in "$bin/origin" "$bin/relay"; do
  [[ -x $exe ]] || setup "no $exe (cargo build --release -p ringside-origin -p ringside-relay, or set BIN_DIR)"
done
command -v "$prometheus" >/dev/null || setup "no prometheus on PATH (Debian package prometheus)"
command -v python3 >/dev/null || setup "no python3"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringside-live-check.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  # SIGTERM (a relay drains, up to its 5 s drain timeout), then SIGKILL
  # whatever is still there after 10 s.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  local i left
  for (( i = 0; i < 100; i++ )); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    (( left )) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc -ne 0 && -d $tmp ]]; then
    for log in "$tmp"/*.log; do
      [[ -f $log ]] || continue
      printf -- '--- last lines of %s\n' "$(basename "$log")" >&2
      tail -n 15 "$log" | sed 's/\x1b\[[0-9;]*m//g' >&2
    done
  fi
  rm -rf "$tmp"
  say "took $(( $(date +%s) - started )) s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports ---------------------------------------------------------------
# free_ports N tcp|udp: N ports the kernel just gave out (closed again;
# a clash in the moment before we bind them fails the start, clearly).
free_ports() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys
n, kind = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
# tcp_free PORT: 0 when nothing listens on it (bound as the binaries and
# Prometheus bind, with SO_REUSEADDR: a connection in TIME_WAIT from an
# earlier run does not count).
tcp_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

shipped=(9464 9465 9466)
metrics=("${shipped[@]}")
for p in "${shipped[@]}"; do
  if ! tcp_free "$p"; then
    read -r -a metrics <<<"$(free_ports 3 tcp)"
    say "port $p is taken: using metrics ports ${metrics[*]} instead of ${shipped[*]}"
    break
  fi
done
read -r prom_port _ <<<"$(free_ports 1 tcp)"
read -r origin_port eu_port us_port <<<"$(free_ports 3 udp)"

cp "$here/prometheus/prometheus.yml" "$here/prometheus/ringside-rules.yml" "$tmp/"
for i in 0 1 2; do
  grep -q "\"127.0.0.1:${shipped[$i]}\"" "$tmp/prometheus.yml" \
    || setup "prometheus.yml no longer scrapes 127.0.0.1:${shipped[$i]}: update this script"
  sed -i "s/\"127.0.0.1:${shipped[$i]}\"/\"127.0.0.1:${metrics[$i]}\"/" "$tmp/prometheus.yml"
done

# --- the system ----------------------------------------------------------
secret() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
cluster=$(secret)
token=$(secret)

(
  cd "$tmp"
  export RINGSIDE_ORIGIN_LISTEN=127.0.0.1:$origin_port \
    RINGSIDE_ORIGIN_DATA_DIR=$tmp/origin \
    RINGSIDE_ORIGIN_CLUSTER_SECRET=$cluster \
    RINGSIDE_ORIGIN_NODE_NAME=origin-1 \
    RINGSIDE_ORIGIN_METRICS_LISTEN=127.0.0.1:${metrics[0]}
  exec "$bin/origin" >"$tmp/origin.log" 2>&1
) &
pids+=($!)

# http_ok URL: 0 when it answers 200.
http_ok() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}
# wait_ready WHAT URL SECONDS PID
wait_ready() {
  local deadline=$(( $(date +%s) + $3 ))
  until http_ok "$2"; do
    kill -0 "$4" 2>/dev/null || die "$1 exited during start-up (log below)"
    (( $(date +%s) < deadline )) || die "$1 not ready at $2 after $3 s"
    sleep 0.2
  done
  say "$1 ready ($2)"
}
wait_ready origin "http://127.0.0.1:${metrics[0]}/readyz" 30 "${pids[0]}"

start_relay() { # name region udp-port metrics-port
  (
    cd "$tmp"
    export RINGSIDE_RELAY_NAME=$1 RINGSIDE_RELAY_REGION=$2 \
      RINGSIDE_RELAY_LISTEN=127.0.0.1:$3 \
      RINGSIDE_RELAY_METRICS_LISTEN=127.0.0.1:$4 \
      RINGSIDE_RELAY_ORIGIN=127.0.0.1:$origin_port \
      RINGSIDE_RELAY_ORIGIN_CERT=$tmp/origin/origin-cert.pem \
      RINGSIDE_RELAY_CLUSTER_SECRET=$cluster \
      RINGSIDE_RELAY_TOKEN_SECRET=$token \
      RINGSIDE_RELAY_IDENTITY_FILE=$tmp/$1-identity.pem \
      RINGSIDE_RELAY_CERT_OUT=$tmp/$1-cert.pem
    exec "$bin/relay" >"$tmp/$1.log" 2>&1
  ) &
  pids+=($!)
}
start_relay eu-1 eu "$eu_port" "${metrics[1]}"
eu_pid=${pids[-1]}
start_relay us-1 us "$us_port" "${metrics[2]}"
us_pid=${pids[-1]}
# Ready = linked to the origin: Prometheus starts only once they are, so
# a relay still connecting is not what the first evaluations see.
wait_ready eu-1 "http://127.0.0.1:${metrics[1]}/readyz" 30 "$eu_pid"
wait_ready us-1 "http://127.0.0.1:${metrics[2]}/readyz" 30 "$us_pid"

"$prometheus" --config.file="$tmp/prometheus.yml" \
  --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" \
  --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
wait_ready prometheus "http://127.0.0.1:$prom_port/-/ready" 30 "$prom_pid"

# --- the checks ----------------------------------------------------------
# check NAME SECONDS: runs the Python check NAME (below) until it passes or
# SECONDS pass; its last complaint is the failure.
checks=$tmp/checks.py
cat >"$checks" <<'EOF'
import json, re, sys, time, urllib.parse, urllib.request

api, name, deploy = sys.argv[1], sys.argv[2], sys.argv[3]


def get(path, **params):
    url = f"{api}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{url}: {body}")
    return body["data"]


def query(q):
    return get("query", query=q)["result"]


def values(q, label):
    return sorted(s["metric"].get(label, "") for s in query(q))


def expect(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got}, want {want}")


def targets_up():
    active = get("targets", state="active")["activeTargets"]
    jobs = sorted(t["labels"]["job"] for t in active)
    expect("targets by job", jobs, ["ringside-origin", "ringside-relay", "ringside-relay"])
    down = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in active if t["health"] != "up"]
    if down:
        raise SystemExit(f"targets not up: {down}")
    # A couple of scrapes each.
    scrapes = query("count_over_time(up[10m])")
    if len(scrapes) != 3 or any(float(s["value"][1]) < 2 for s in scrapes):
        raise SystemExit(f"fewer than 2 scrapes of every target yet: {scrapes}")


# Referenced by a rule or a panel but created on their first event: an idle
# system has none.
FIRST_EVENT = {"ringside_relay_sent_total", "ringside_relay_clients_closed_total"}


def exprs_of_rules(path):
    """The `expr:` values of a rules file (no YAML library needed: an
    expression is the rest of its line, or the lines indented under it)."""
    lines, out = open(path).read().split("\n"), []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:- )?expr: ?(.*)$", line)
        if not m:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value not in ("|", ">", "|-", ">-"):
            out.append(value)
            continue
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt)
        out.append("\n".join(block))
    return out


def exprs_of_dashboard(path):
    dash = json.load(open(path))
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def referenced():
    exprs = exprs_of_rules(deploy + "/prometheus/ringside-rules.yml")
    exprs += exprs_of_dashboard(deploy + "/grafana/ringside.json")
    if len(exprs) < 40:
        raise SystemExit(f"only {len(exprs)} expressions found in the rules and the dashboard")
    names = set()
    for e in exprs:
        # Metric names, not recording rules (they have colons).
        names.update(re.findall(r"(?<![\w:])(ringside_[a-z_]+)(?![\w:])", e))
    return names


def metrics_and_labels():
    have = set(get("label/__name__/values"))
    missing = sorted(referenced() - have - FIRST_EVENT)
    if missing:
        raise SystemExit(f"referenced by rules or dashboard but not scraped: {missing}")
    expect("ringside_ready", sorted((s["metric"]["job"], s["value"][1]) for s in query("ringside_ready")),
           [("ringside-origin", "1"), ("ringside-relay", "1"), ("ringside-relay", "1")])
    expect("relay regions", values("ringside_relay_connections", "region"), ["eu", "us"])
    expect("relay names", values("ringside_relay_upstream_connected == 1", "relay"), ["eu-1", "us-1"])
    expect("origin node", values("ringside_rooms_live", "node"), ["origin-1"])
    expect("start kinds", values('ringside_interaction_starts_total{outcome="started",reason="none"}', "kind"),
           ["challenge", "pk"])
    expect("start outcomes", values("count by (outcome) (ringside_interaction_starts_total)", "outcome"),
           ["failed", "started"])
    expect("completion outcomes", values("count by (outcome) (ringside_interaction_completions_total)", "outcome"),
           ["aborted", "forfeited", "settled"])
    expect("gift windows", values("ringside_gifts_total", "window"), ["challenge", "none", "pk"])
    classes = ["ambient", "authority", "chat", "gift", "session"]
    expect("action ack classes", values("count by (class) (ringside_action_ack_seconds_count)", "class"), classes)
    expect("client ack classes", values("count by (class) (ringside_client_ack_seconds_count)", "class"), classes)
    expect("session kinds", values("count by (kind) (ringside_interaction_sessions_total)", "kind"), ["challenge", "pk"])
    expect("path links", values("count by (link) (ringside_path_sent_packets_total)", "link"), ["client", "upstream"])
    expect("handshake outcomes", values("count by (outcome) (ringside_relay_handshakes_total)", "outcome"),
           ["accepted", "refused", "retry"])
    expect("histogram buckets le=+Inf", len(query('ringside_wal_sync_seconds_bucket{le="+Inf"}')), 1)


def rules_ok():
    groups = get("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if len(rules) < 20:
        raise SystemExit(f"only {len(rules)} rules loaded")
    # Evaluated since every target had a couple of scrapes: the caller
    # passes that moment.
    since = float(sys.argv[4])
    bad = [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"]
    if bad:
        raise SystemExit(f"rules not healthy: {bad}")
    stale = [g["name"] for g in groups if parse_time(g["lastEvaluation"]) < since]
    if stale:
        raise SystemExit(f"groups not evaluated since the scrapes: {stale}")
    print(f"{len(rules)} rules in {len(groups)} groups, all health ok")


def parse_time(s):
    # RFC 3339 with nanoseconds; seconds precision is enough here.
    from datetime import datetime
    return datetime.fromisoformat(s[:19] + "+00:00").timestamp()


def quiet():
    alerts = get("alerts")["alerts"]
    if alerts:
        raise SystemExit("alerts on an idle system: " + json.dumps(
            [(a["labels"]["alertname"], a["state"], a["labels"]) for a in alerts]))
    firing = [r["name"] for g in get("rules")["groups"] for r in g["rules"]
              if r["type"] == "alerting" and r["state"] != "inactive"]
    if firing:
        raise SystemExit(f"alerting rules not inactive: {firing}")


def relay_down_pending():
    instance = sys.argv[4]
    alerts = [a for a in get("alerts")["alerts"] if a["labels"]["alertname"] == "RingsideRelayDown"]
    want = {"alertname": "RingsideRelayDown", "severity": "critical", "job": "ringside-relay",
            "instance": instance, "region": "us", "relay": "us-1"}
    if [(a["labels"], a["state"]) for a in alerts] != [(want, "pending")]:
        raise SystemExit(f"RingsideRelayDown: got {[(a['labels'], a['state']) for a in alerts]}, "
                         f"want {[(want, 'pending')]}")
    others = [a["labels"]["alertname"] for a in get("alerts")["alerts"]
              if a["labels"]["alertname"] != "RingsideRelayDown"]
    if others:
        raise SystemExit(f"other alerts after one relay died: {others}")


{"targets_up": targets_up, "metrics_and_labels": metrics_and_labels, "rules_ok": rules_ok,
 "quiet": quiet, "relay_down_pending": relay_down_pending}[name]()
EOF

api=http://127.0.0.1:$prom_port
check() { # NAME SECONDS [ARG]
  local deadline=$(( $(date +%s) + $2 )) out
  while true; do
    kill -0 "$prom_pid" 2>/dev/null || die "prometheus exited (log below)"
    if out=$(python3 "$checks" "$api" "$1" "$here" "${3:-}" 2>&1); then
      say "ok: $1${out:+: $out}"
      return 0
    fi
    (( $(date +%s) < deadline )) || die "$1 after $2 s: $out"
    sleep 1
  done
}

# The shipped scrape interval is 15 s: two scrapes take up to 30 s.
check targets_up 60
scraped=$(date +%s)
check metrics_and_labels 10
# Evaluation interval 15 s: every group once more after the scrapes.
check rules_ok 40 "$scraped"
check quiet 0

say "killing relay us-1 (pid $us_pid)"
{ kill -KILL "$us_pid" && wait "$us_pid"; } 2>/dev/null || true
# A failed scrape (up to 15 s), then an evaluation (up to 15 s).
check relay_down_pending 60 "127.0.0.1:${metrics[2]}"
say "all checks passed"
