#!/usr/bin/env bash
# Token endpoint load benchmark on PostgreSQL, with the shared harness (../shared/bench/load.sh).
#
#   bench/token_load.sh            # issuer: cc, refresh, jwks; then the peer (oidc-provider) likewise
#   PEER=0 bench/token_load.sh     # issuer only
#   FLOOR=0 bench/token_load.sh    # without the floor programs (bench/floor_app.py)
#
# What it does, every run from scratch: copies the harness to a temporary directory (npm ci
# there), creates a fresh PostgreSQL database, `issuer db upgrade`, registers a client
# (client_credentials + password + refresh_token), starts `issuer serve` pinned to CPU 0 on a free
# loopback port, and runs load.sh (which pins itself to CPU 1) with --server-pid, so every figure
# comes with requests per server CPU-second. Refresh tokens come from bench/mint_refresh.py (the
# issuer's own model layer, same database; the app has no mint route). Then, with PEER=1, it does
# the same for panva's oidc-provider (server.mjs from the harness copy, on this machine's node),
# prints one table with both and the ratio, and finally a refresh run at LAT_CONNECTIONS
# connections: the rotation latency at about the peer's request rate. With FLOOR=1 (the default)
# it also measures the floor of ../shared/bench/LIMITS.md in the same run: bench/floor_app.py, a
# bare ASGI app on uvicorn answering a form POST with one ES256 token and GET /jwks with fixed
# bytes, pinned to CPU 0 like the others (cc and jwks only). Everything it created
# (server processes, database, temporary directory) is removed on exit.
#
# Environment: HARNESS (default ../shared/bench beside the repository), PG_ADMIN_URL
# (default postgresql://postgres@127.0.0.1:5432/postgres), PEER (1), CONNECTIONS (32),
# LAT_CONNECTIONS (4; 0 skips that run), DURATION (10), RUNS (3), RT_COUNT (10000), RT_WARMUP (2000),
# MAX_INTERFERENCE (0.05, cc and jwks), REFRESH_MAX_INTERFERENCE (0.1), KEEP_JSON (a directory to copy the raw JSON to),
# REV (a git revision: benchmark the issuer package of that commit, extracted with `git archive`
# into the temporary directory and put first on PYTHONPATH; default: the working tree),
# PROFILE (a directory: py-spy samples the issuer during each of its scenarios and writes
# collapsed stacks there, issuer.cc.txt, issuer.refresh.txt, ...; read them with
# bench/profile_top.py. The sampler runs on CPU 1 beside the load generator, so the figures of a
# profiled run are not the ones to quote).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
peer="${PEER:-1}"
floor="${FLOOR:-1}"
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

# --- the issuer on a fresh PostgreSQL database -------------------------------------------------
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
log "issuer: pid $srv on 127.0.0.1:$port (CPU $(taskset -pc "$srv" | awk '{print $NF}'))"

mint="$py $root/bench/mint_refresh.py --client-id $client_id --count {n}"
common=(--client-id "$client_id" --client-secret "$client_secret" --server-pid "$srv"
  --connections "$connections" --duration "$duration" --runs "$runs" --rt-count "$rt_count" --rt-warmup "$rt_warmup")
profiler=""
start_profile() {  # NAME: sample the server until stop_profile
  [ -n "${PROFILE:-}" ] || return 0
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
issuer_args=(--base-url "http://127.0.0.1:$port" --jwks-path /.well-known/jwks.json "${common[@]}")
# Discard (and repeat) runs disturbed by other processes on the server's core. PostgreSQL's backend
# is not pinned and may run there during refresh runs, so refresh gets a looser bound.
start_profile issuer.cc
"$load" "${issuer_args[@]}" --only cc,jwks --max-interference "$max_interference" --max-retries 4 \
  --label "issuer cc+jwks" --out "$work/issuer.cc.json"
stop_profile
refresh_filter=(--max-interference "$refresh_max_interference" --max-retries 4)
start_profile issuer.refresh
"$load" "${issuer_args[@]}" --only refresh --rt-cmd "$mint" "${refresh_filter[@]}" \
  --label "issuer refresh" --out "$work/issuer.refresh.json"
stop_profile
if [ "$lat_connections" != 0 ]; then
  "$load" "${issuer_args[@]}" --only refresh --rt-cmd "$mint" --connections "$lat_connections" \
    "${refresh_filter[@]}" --label "issuer refresh c=$lat_connections" --out "$work/issuer.refresh-lat.json"
fi
kill "$srv" && wait "$srv" 2>/dev/null || true
srv=""

# --- the peer: panva's oidc-provider, same harness, same machine -----------------------------
if [ "$peer" = 1 ]; then
  (cd "$work/harness/oidc-provider" && npm ci --no-audit --no-fund --loglevel=error >&2)
  pport="$(free_port)"
  (cd "$work/harness/oidc-provider" && PORT="$pport" exec taskset -c 0 node server.mjs) >"$work/peer.log" 2>&1 &
  peer_pid=$!
  wait_http "http://127.0.0.1:$pport/jwks" "$peer_pid" "$work/peer.log"
  log "peer: oidc-provider pid $peer_pid on 127.0.0.1:$pport, node $(node --version)"
  peer_args=(--base-url "http://127.0.0.1:$pport" --client-id bench-client
    --client-secret bench-secret-0123456789abcdef0123456789abcdef --server-pid "$peer_pid"
    --connections "$connections" --duration "$duration" --runs "$runs" --rt-count "$rt_count" --rt-warmup "$rt_warmup"
    --max-interference "$max_interference" --max-retries 4)
  "$load" "${peer_args[@]}" --scope api:read \
    --rt-cmd "curl -s -X POST \"http://127.0.0.1:$pport/__bench/mint?n={n}\"" \
    --label "oidc-provider" --out "$work/peer.json"
  kill "$peer_pid" && wait "$peer_pid" 2>/dev/null || true
  peer_pid=""
fi

# --- the floor: a bare ASGI app, same harness, same placement ----------------------------------
if [ "$floor" = 1 ]; then
  fport="$(free_port)"
  taskset -c 0 "$py" "$root/bench/floor_app.py" --port "$fport" >"$work/floor.log" 2>&1 &
  floor_pid=$!
  wait_http "http://127.0.0.1:$fport/jwks" "$floor_pid" "$work/floor.log"
  log "floor: bench/floor_app.py pid $floor_pid on 127.0.0.1:$fport"
  "$load" --base-url "http://127.0.0.1:$fport" --jwks-path /jwks --client-id floor --client-secret floor \
    --server-pid "$floor_pid" --connections "$connections" --duration "$duration" --runs "$runs" \
    --only cc,jwks --max-interference "$max_interference" --max-retries 4 \
    --label "floor" --out "$work/floor.json"
  kill "$floor_pid" && wait "$floor_pid" 2>/dev/null || true
  floor_pid=""
fi

# --- the figures --------------------------------------------------------------------------------
"$py" - "$work" "$connections" "$lat_connections" <<'EOF'
import json, os, platform, subprocess, sys
work, conns, lat_conns = sys.argv[1], sys.argv[2], sys.argv[3]

def load(name):
    path = os.path.join(work, name)
    return json.load(open(path))["scenarios"] if os.path.exists(path) else {}

issuer = {**load("issuer.cc.json"), **load("issuer.refresh.json")}
lat = load("issuer.refresh-lat.json").get("refresh_rotation")
peer = load("peer.json")
floor = load("floor.json")
RECORDED = {"client_credentials": 1595, "refresh_rotation": 1427, "jwks": 6097}  # Node 22, per CPU-s
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"\nmachine: {os.cpu_count()} vCPU {cpu}; Linux {platform.release()}; Python {platform.python_version()}; "
      f"node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}; "
      f"server on CPU 0, load generator on CPU 1; {conns} connections")
print("\n| scenario | issuer req/s per server CPU-s | wall req/s | p50 ms | p99 ms | non-2xx | "
      "peer req/s per CPU-s | peer p50 / p99 ms | issuer / peer | floor req/s per CPU-s | issuer / floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key, label, rate in (("client_credentials", "client_credentials", "rps"),
                         ("refresh_rotation", "refresh_token rotation", "rotations_per_s"),
                         ("jwks", "GET JWKS", "rps")):
    m = issuer.get(key, {}).get("median")
    if not m:
        continue
    p = peer.get(key, {}).get("median")
    peer_rate = p["per_server_cpu_s"] if p else RECORDED[key]
    peer_note = f"{p['per_server_cpu_s']:.0f}" if p else f"{RECORDED[key]} (recorded)"
    peer_lat = f"{p['lat_ms.p50']:.1f} / {p['lat_ms.p99']:.1f}" if p else "-"
    f = floor.get(key, {}).get("median")
    floor_note = f"{f['per_server_cpu_s']:.0f} | {m['per_server_cpu_s'] / f['per_server_cpu_s']:.2f}" if f else "- | -"
    print(f"| {label} | {m['per_server_cpu_s']:.0f} | {m[rate]:.0f} | {m['lat_ms.p50']:.2f} | "
          f"{m['lat_ms.p99']:.2f} | {m['non2xx']} | {peer_note} | {peer_lat} | "
          f"{m['per_server_cpu_s'] / peer_rate:.2f} | {floor_note} |")
if lat:
    m = lat["median"]
    print(f"\nrefresh rotation at {lat_conns} connections: {m['rotations_per_s']:.0f} rotations/s "
          f"({m['per_server_cpu_s']:.0f} per server CPU-s), p50 {m['lat_ms.p50']:.2f} ms, "
          f"p99 {m['lat_ms.p99']:.2f} ms, non-2xx {m['non2xx']}")
for name, s in (("issuer", issuer), ("peer", peer), ("floor", floor)):
    for key, v in s.items():
        med = v.get("median", {})
        print(f"{name} {key}: server CPU util {med.get('server_cpu_util')}, other CPU on its core "
              f"{med.get('other_cpu_s_on_server_cores')} s per run, discarded runs {len(v.get('discarded_runs', []))}")
EOF
