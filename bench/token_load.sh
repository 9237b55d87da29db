#!/usr/bin/env bash
# Token endpoint load benchmark on PostgreSQL, with the shared harness (../shared/bench/load.sh).
#
#   bench/token_load.sh            # the issuer, the peer (oidc-provider) and the floor, in rounds
#   PEER=0 bench/token_load.sh     # issuer only
#   FLOOR=0 bench/token_load.sh    # without the floor programs (bench/floor_app.py)
#   ROUNDS=5 bench/token_load.sh   # more rounds: a tighter median of the ratios
#
# What it does, every run from scratch: copies the harness to a temporary directory (npm ci
# there), creates a fresh PostgreSQL database, `issuer db upgrade`, registers a client
# (client_credentials + password + refresh_token), and starts the servers once, each on a free
# loopback port: `issuer serve`, with PEER=1 panva's oidc-provider (server.mjs from the harness
# copy, on this machine's node), and with FLOOR=1 (the default) the floor of
# ../shared/bench/LIMITS.md, bench/floor_app.py (a bare ASGI app on uvicorn answering a form POST
# with one ES256 token and GET /jwks with fixed bytes; cc and jwks only). Then ROUNDS rounds: in
# each, every server takes one turn, in an order rotated from round to round. In its turn a server
# runs on CPU 0 (between turns it is parked, idle, on CPU 1) and load.sh (which pins itself to
# CPU 1) runs its scenarios with --server-pid, so every figure comes with requests per server
# CPU-second. Refresh tokens come from bench/mint_refresh.py (the issuer's own model layer, same
# database; the app has no mint route). The table gives each figure's median over the rounds and
# each ratio as the median (and range) of the rounds' own ratios: the two servers of a ratio ran
# minutes apart, so a machine that speeds up or slows down over the run moves both.
# (Measuring the servers one after the other, as this script did before, put all such drift into
# the ratios: they moved by 15% between runs.) The issuer's last turn ends with a refresh run at
# LAT_CONNECTIONS connections: the rotation latency at about the peer's request rate. Everything it
# created (server processes, database, temporary directory) is removed on exit.
#
# Environment: HARNESS (default ../shared/bench beside the repository), PG_ADMIN_URL
# (default postgresql://postgres@127.0.0.1:5432/postgres), PEER (1), CONNECTIONS (32),
# LAT_CONNECTIONS (4; 0 skips that run), ROUNDS (3), DURATION (10), RUNS (measured runs per
# scenario in a turn, after its warm-up: 1), RT_COUNT (10000), RT_WARMUP (2000),
# MAX_INTERFERENCE (0.05, cc and jwks), REFRESH_MAX_INTERFERENCE (0.1), KEEP_JSON (a directory to copy the raw JSON to),
# REV (a git revision: benchmark the issuer package of that commit, extracted with `git archive`
# into the temporary directory and put first on PYTHONPATH; default: the working tree),
# PROFILE (a directory: py-spy samples the issuer during each of its scenarios and writes
# collapsed stacks there, issuer.cc.txt and issuer.refresh.txt, in round 1; read them with
# bench/profile_top.py. The sampler runs on CPU 1 beside the load generator, so the figures of a
# profiled run are not the ones to quote).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
peer="${PEER:-1}"
floor="${FLOOR:-1}"
rounds="${ROUNDS:-3}"
runs="${RUNS:-1}"  # per turn (lib.sh's default of 3 is for the scripts that measure one server)
floor_pid=""
lat_connections="${LAT_CONNECTIONS:-4}"
max_interference="${MAX_INTERFERENCE:-0.05}"
refresh_max_interference="${REFRESH_MAX_INTERFERENCE:-0.1}"

work="$(mktemp -d "${TMPDIR:-/tmp}/issuer-bench.XXXXXX")"
db="issuer_bench_$$_${RANDOM}"
srv=""
peer_pid=""
db_created=0

cleanup() {
  set +e
  for pid in ${profiler:-} $srv $peer_pid $floor_pid; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [ "$db_created" = 1 ]; then
    psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  fi
  if [ -n "${KEEP_JSON:-}" ]; then mkdir -p "$KEEP_JSON" && cp "$work"/*.json "$KEEP_JSON"/ 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


log "harness: copying $harness_src to $work/harness"
cp -r "$harness_src/." "$work/harness"
chmod -R u+w "$work/harness"
(cd "$work/harness" && npm ci --no-audit --no-fund --loglevel=error >&2)
load="$work/harness/load.sh"
if [ -n "${REV:-}" ]; then
  mkdir -p "$work/src"
  git -C "$root" archive "$REV" issuer alembic alembic.ini | tar -x -C "$work/src"  # migrations: store/migrations.py
  export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"
  log "issuer package from $REV ($(git -C "$root" rev-parse --short "$REV"))"
fi

# --- the three servers, started once ------------------------------------------------------------
# Each is measured on CPU 0 in its turn and parked on CPU 1 (beside the load generator, idle)
# between turns, so that nothing but the measured server runs on CPU 0 (the harness's interference
# filter counts every other process there).
park() { taskset -apc 1 "$1" >/dev/null; }    # PID: all its threads off the measured core
unpark() { taskset -apc 0 "$1" >/dev/null; }  # PID: all its threads on it

log "database: $db"
psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
db_created=1
port="$(free_port)"
export ISSUER_DATABASE_URL="${admin_url%/*}/$db"
export ISSUER_KEYS_DIR="$work/keys"
export ISSUER_URL="http://127.0.0.1:$port"
unset ISSUER_REDIS_URL ISSUER_KEY_ENCRYPTION_KEY ISSUER_HMAC_KEY
export ISSUER_RATE_LIMIT_PASSWORD=0  # one user logging in thousands of times is what the limit refuses
"$issuer" db upgrade >&2
creds="$("$issuer" clients create --name bench --grant client_credentials --grant password \
  --grant refresh_token --scope "read write" --json)"
client_id="$(printf '%s' "$creds" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
client_secret="$(printf '%s' "$creds" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"

taskset -c 0 "$issuer" serve --port "$port" --log-level warning >"$work/issuer.log" 2>&1 &
srv=$!
wait_http "http://127.0.0.1:$port/.well-known/jwks.json" "$srv" "$work/issuer.log"
park "$srv"
log "issuer: pid $srv on 127.0.0.1:$port"

if [ "$peer" = 1 ]; then
  (cd "$work/harness/oidc-provider" && npm ci --no-audit --no-fund --loglevel=error >&2)
  pport="$(free_port)"
  (cd "$work/harness/oidc-provider" && PORT="$pport" exec taskset -c 0 node server.mjs) >"$work/peer.log" 2>&1 &
  peer_pid=$!
  wait_http "http://127.0.0.1:$pport/jwks" "$peer_pid" "$work/peer.log"
  park "$peer_pid"
  log "peer: oidc-provider pid $peer_pid on 127.0.0.1:$pport, node $(node --version)"
fi
if [ "$floor" = 1 ]; then
  fport="$(free_port)"
  taskset -c 0 "$py" "$root/bench/floor_app.py" --port "$fport" >"$work/floor.log" 2>&1 &
  floor_pid=$!
  wait_http "http://127.0.0.1:$fport/jwks" "$floor_pid" "$work/floor.log"
  park "$floor_pid"
  log "floor: bench/floor_app.py pid $floor_pid on 127.0.0.1:$fport"
fi

profiler=""
start_profile() {  # NAME: sample the issuer until stop_profile (round 1 only)
  [ -n "${PROFILE:-}" ] && [ "$round" = 1 ] || return 0
  [ -x "$root/.venv/bin/py-spy" ] || { echo "PROFILE needs py-spy: .venv/bin/pip install py-spy" >&2; exit 2; }
  mkdir -p "$PROFILE"
  taskset -c 1 "$root/.venv/bin/py-spy" record --pid "$srv" --rate "${PROFILE_RATE:-200}" --format raw \
    --nonblocking -o "$PROFILE/$1.txt" >"$work/py-spy.$1.log" 2>&1 &
  profiler=$!
}
stop_profile() {
  [ -n "$profiler" ] || return 0
  kill -INT "$profiler" 2>/dev/null; wait "$profiler" 2>/dev/null || true
  profiler=""
}

measured=(--connections "$connections" --duration "$duration" --runs "$runs" --max-retries 4)
turn_issuer() {  # ROUND
  local args=(--base-url "http://127.0.0.1:$port" --jwks-path /.well-known/jwks.json
    --client-id "$client_id" --client-secret "$client_secret" --server-pid "$srv" "${measured[@]}"
    --rt-count "$rt_count" --rt-warmup "$rt_warmup")
  unpark "$srv"
  start_profile issuer.cc
  "$load" "${args[@]}" --only cc,jwks --max-interference "$max_interference" \
    --label "issuer cc+jwks, round $1" --out "$work/issuer.cc.r$1.json"
  stop_profile
  # PostgreSQL's backend is not pinned and may run on CPU 0 during refresh: a looser bound there.
  start_profile issuer.refresh
  "$load" "${args[@]}" --only refresh --rt-cmd "$mint" --max-interference "$refresh_max_interference" \
    --label "issuer refresh, round $1" --out "$work/issuer.refresh.r$1.json"
  stop_profile
  if [ "$1" = "$rounds" ] && [ "$lat_connections" != 0 ]; then
    "$load" "${args[@]}" --only refresh --rt-cmd "$mint" --connections "$lat_connections" \
      --max-interference "$refresh_max_interference" --label "issuer refresh c=$lat_connections" \
      --out "$work/issuer.refresh-lat.json"
  fi
  park "$srv"
}
turn_peer() {  # ROUND
  unpark "$peer_pid"
  "$load" --base-url "http://127.0.0.1:$pport" --client-id bench-client \
    --client-secret bench-secret-0123456789abcdef0123456789abcdef --server-pid "$peer_pid" \
    "${measured[@]}" --rt-count "$rt_count" --rt-warmup "$rt_warmup" --max-interference "$max_interference" \
    --scope api:read --rt-cmd "curl -s -X POST \"http://127.0.0.1:$pport/__bench/mint?n={n}\"" \
    --label "oidc-provider, round $1" --out "$work/peer.r$1.json"
  park "$peer_pid"
}
turn_floor() {  # ROUND
  unpark "$floor_pid"
  "$load" --base-url "http://127.0.0.1:$fport" --jwks-path /jwks --client-id floor --client-secret floor \
    --server-pid "$floor_pid" "${measured[@]}" --only cc,jwks --max-interference "$max_interference" \
    --label "floor, round $1" --out "$work/floor.r$1.json"
  park "$floor_pid"
}

# --- the rounds: every server once per round, the order rotated ----------------------------------
mint="$py $root/bench/mint_refresh.py --client-id $client_id --count {n}"
servers=(issuer)
[ "$peer" = 1 ] && servers+=(peer)
[ "$floor" = 1 ] && servers+=(floor)
orders=()
for round in $(seq 1 "$rounds"); do
  order=()
  for i in "${!servers[@]}"; do order+=("${servers[$(( (i + round - 1) % ${#servers[@]} ))]}"); done
  orders+=("${order[*]}")
  log "round $round of $rounds: ${order[*]}"
  for name in "${order[@]}"; do "turn_$name" "$round"; done
done
printf '%s\n' "${orders[@]}" >"$work/orders.txt"

# --- the figures --------------------------------------------------------------------------------
"$py" - "$work" "$connections" "$lat_connections" "$rounds" <<'EOF'
import json, os, platform, statistics, subprocess, sys
work, conns, lat_conns, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
orders = open(os.path.join(work, "orders.txt")).read().split("\n")

def load(name):
    path = os.path.join(work, name)
    return json.load(open(path))["scenarios"] if os.path.exists(path) else {}

# per round: server -> scenario -> the harness's figures (its median over the turn's runs)
per_round = []
for r in range(1, rounds + 1):
    per_round.append({
        "issuer": {**load(f"issuer.cc.r{r}.json"), **load(f"issuer.refresh.r{r}.json")},
        "peer": load(f"peer.r{r}.json"),
        "floor": load(f"floor.r{r}.json"),
    })
lat = load("issuer.refresh-lat.json").get("refresh_rotation")
RECORDED = {"client_credentials": 1595, "refresh_rotation": 1427, "jwks": 6097}  # Node 22, per CPU-s
SCENARIOS = (("client_credentials", "client_credentials", "rps"),
             ("refresh_rotation", "refresh_token rotation", "rotations_per_s"),
             ("jwks", "GET JWKS", "rps"))

def figures(server, key):
    """The server's median figures of each round (None where it did not run)."""
    return [r[server].get(key, {}).get("median") for r in per_round]

def ratios(key, other):
    """issuer / other, round by round: the two were measured minutes apart, so drift cancels."""
    return [i["per_server_cpu_s"] / o["per_server_cpu_s"]
            for i, o in zip(figures("issuer", key), figures(other, key)) if i and o]

def med(values, field):
    return statistics.median(v[field] for v in values)

def span(values):
    return f"**{statistics.median(values):.2f}** [{min(values):.2f}-{max(values):.2f}]" if values else "-"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"\nmachine: {os.cpu_count()} vCPU {cpu}; Linux {platform.release()}; Python {platform.python_version()}; "
      f"node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}; "
      f"server on CPU 0, load generator on CPU 1; {conns} connections; {rounds} rounds, each server once "
      f"per round in a rotated order; figures are medians over the rounds, ratios the median "
      f"[min-max] of each round's own ratio")
print("\n| scenario | issuer req/s per server CPU-s | wall req/s | p50 ms | p99 ms | non-2xx | "
      "peer req/s per CPU-s | peer p50 / p99 ms | issuer / peer | floor req/s per CPU-s | issuer / floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key, label, rate in SCENARIOS:
    mine = [m for m in figures("issuer", key) if m]
    if not mine:
        continue
    peer = [p for p in figures("peer", key) if p]
    floor = [f for f in figures("floor", key) if f]
    if peer:
        peer_note = f"{med(peer, 'per_server_cpu_s'):.0f}"
        peer_lat = f"{med(peer, 'lat_ms.p50'):.1f} / {med(peer, 'lat_ms.p99'):.1f}"
        vs_peer = span(ratios(key, "peer"))
    else:
        peer_note, peer_lat = f"{RECORDED[key]} (recorded)", "-"
        vs_peer = f"{med(mine, 'per_server_cpu_s') / RECORDED[key]:.2f}"
    floor_note = f"{med(floor, 'per_server_cpu_s'):.0f} | {span(ratios(key, 'floor'))}" if floor else "- | -"
    print(f"| {label} | {med(mine, 'per_server_cpu_s'):.0f} | {med(mine, rate):.0f} | {med(mine, 'lat_ms.p50'):.2f} | "
          f"{med(mine, 'lat_ms.p99'):.2f} | {sum(m['non2xx'] for m in mine)} | {peer_note} | {peer_lat} | "
          f"{vs_peer} | {floor_note} |")

print("\n| round | order | " + " | ".join(
    f"{label} {name}" for key, label, _ in SCENARIOS for name in ("issuer", "peer", "floor")
    if any(figures(name, key))) + " |")
columns = [(key, name) for key, _, _ in SCENARIOS for name in ("issuer", "peer", "floor") if any(figures(name, key))]
print("|---|---|" + "---|" * len(columns))
for r in range(rounds):
    cells = []
    for key, name in columns:
        m = per_round[r][name].get(key, {}).get("median")
        cells.append(f"{m['per_server_cpu_s']:.0f}" if m else "-")
    print(f"| {r + 1} | {orders[r]} | " + " | ".join(cells) + " |")

if lat:
    m = lat["median"]
    print(f"\nrefresh rotation at {lat_conns} connections: {m['rotations_per_s']:.0f} rotations/s "
          f"({m['per_server_cpu_s']:.0f} per server CPU-s), p50 {m['lat_ms.p50']:.2f} ms, "
          f"p99 {m['lat_ms.p99']:.2f} ms, non-2xx {m['non2xx']}")
for name in ("issuer", "peer", "floor"):
    for key, _, _ in SCENARIOS:
        mine = [(r, per_round[r][name][key]) for r in range(rounds) if key in per_round[r][name]]
        if mine:
            print(f"{name} {key}: server CPU util "
                  f"{', '.join(str(v['median'].get('server_cpu_util')) for _, v in mine)}, other CPU on its core "
                  f"{', '.join(str(v['median'].get('other_cpu_s_on_server_cores')) for _, v in mine)} s, "
                  f"discarded runs {sum(len(v.get('discarded_runs', [])) for _, v in mine)}")
EOF
