#!/usr/bin/env bash
# The published load benchmark: `issuer serve --workers N` on PostgreSQL + Redis against panva's
# oidc-provider, same machine, same harness (../shared/bench), for client_credentials, refresh
# rotation and JWKS: requests/s, p50, p99 and the ratio to the peer.
#
#   bench/run.sh                          # WORKERS="1 2": the single-core table first, then N workers
#   WORKERS="2 4" SERVER_CPUS=0-3 LOADGEN_CPU=4 bench/run.sh     # a bigger machine
#
# It does not duplicate the single-core benchmark: it first runs bench/token_load.sh (the issuer
# on one worker pinned to CPU 0, then the peer likewise), keeping its JSON, so the peer's figures
# come from that very run. Then, for every N in WORKERS, from scratch: a fresh PostgreSQL
# database (`issuer db upgrade`), a throwaway redis-server on a free loopback port
# (ISSUER_REDIS_URL), a client, `issuer serve --workers N` under `taskset -c $SERVER_CPUS`, and
# the harness's load.sh with --server-pid listing the supervisor and every worker (so "per server
# CPU-second" counts all of them); refresh tokens from bench/mint_refresh.py. Everything it
# created is removed on exit.
#
# Environment: WORKERS ("1 2"), SERVER_CPUS (0), LOADGEN_CPU (1, read by the harness), SINGLE (1:
# run bench/token_load.sh first; 0 skips it and the peer), HARNESS, PG_ADMIN_URL, CONNECTIONS (32),
# DURATION (10), RUNS (3), RT_COUNT (10000), RT_WARMUP (2000), MAX_INTERFERENCE (0.10); the
# token_load.sh variables pass through to it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
workers_list="${WORKERS:-1 2}"
server_cpus="${SERVER_CPUS:-0}"
single="${SINGLE:-1}"
max_interference="${MAX_INTERFERENCE:-0.10}"

work="$(mktemp -d "${TMPDIR:-/tmp}/issuer-run.XXXXXX")"
srv=""
redis_pid=""
dbs=()

cleanup() {
  set +e
  for pid in $srv $redis_pid; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for db in "${dbs[@]}"; do
    psql "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pids_of() {  # the supervisor and its worker processes, comma-separated
  local all="$1" child
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do all="$all,$child"; done
  printf '%s' "$all"
}

# --- 1. the single-core table and the peer (bench/token_load.sh, unchanged) ---------------------
if [ "$single" = 1 ]; then
  log "bench/token_load.sh: one worker on CPU 0, then oidc-provider"
  KEEP_JSON="$work/single" CONNECTIONS="$connections" DURATION="$duration" RUNS="$runs" \
    RT_COUNT="$rt_count" RT_WARMUP="$rt_warmup" "$root/bench/token_load.sh"
fi

log "harness: copying $harness_src to $work/harness"
cp -r "$harness_src/." "$work/harness"
chmod -R u+w "$work/harness"
(cd "$work/harness" && npm ci --no-audit --no-fund --loglevel=error >&2)
load="$work/harness/load.sh"

# --- 2. N workers on PostgreSQL + Redis -----------------------------------------------------------
for n in $workers_list; do
  db="issuer_run_$$_${n}_${RANDOM}"
  log "workers=$n: database $db, throwaway Redis"
  psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
  dbs+=("$db")
  rport="$(free_port)"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  port="$(free_port)"
  export ISSUER_DATABASE_URL="${admin_url%/*}/$db"
  export ISSUER_REDIS_URL="redis://127.0.0.1:$rport/0"
  export ISSUER_KEYS_DIR="$work/keys-$n"
  export ISSUER_URL="http://127.0.0.1:$port"
  export ISSUER_DB_POOL_SIZE="${ISSUER_DB_POOL_SIZE:-10}"
  export ISSUER_RATE_LIMIT_PASSWORD=0 ISSUER_RATE_LIMIT_CLIENT=0
  unset ISSUER_KEY_ENCRYPTION_KEY ISSUER_HMAC_KEY
  "$issuer" db upgrade >&2
  creds="$("$issuer" clients create --name bench --grant client_credentials --grant password \
    --grant refresh_token --scope "read write" --json)"
  client_id="$(printf '%s' "$creds" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
  client_secret="$(printf '%s' "$creds" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"

  taskset -c "$server_cpus" "$issuer" serve --port "$port" --workers "$n" --log-level warning \
    >"$work/issuer-$n.log" 2>&1 &
  srv=$!
  wait_http "http://127.0.0.1:$port/readyz" "$srv" "$work/issuer-$n.log"
  sleep 1  # every worker up (the first one to answer is enough for /readyz)
  pids="$(pids_of "$srv")"
  log "issuer: --workers $n, pids $pids, CPUs $server_cpus, Redis on $rport"
  args=(--base-url "http://127.0.0.1:$port" --jwks-path /.well-known/jwks.json
    --client-id "$client_id" --client-secret "$client_secret" --server-pid "$pids"
    --connections "$connections" --duration "$duration" --runs "$runs"
    --rt-count "$rt_count" --rt-warmup "$rt_warmup" --max-interference "$max_interference" --max-retries 4)
  "$load" "${args[@]}" --only cc,jwks --label "issuer x$n cc+jwks" --out "$work/workers-$n.cc.json"
  "$load" "${args[@]}" --only refresh \
    --rt-cmd "$py $root/bench/mint_refresh.py --client-id $client_id --count {n}" \
    --label "issuer x$n refresh" --out "$work/workers-$n.refresh.json"
  kill "$srv" && wait "$srv" 2>/dev/null || true
  srv=""
  kill "$redis_pid" && wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done

# --- 3. the table -------------------------------------------------------------------------------
"$py" - "$work" "$connections" "$server_cpus" $workers_list <<'EOF'
import json, os, sys
work, conns, cpus, workers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def load(name):
    path = os.path.join(work, name)
    return json.load(open(path))["scenarios"] if os.path.exists(path) else {}

peer = load("single/peer.json")
print(f"\nissuer --workers N on PostgreSQL + Redis (server on CPUs {cpus}), oidc-provider as measured "
      f"above by bench/token_load.sh; {conns} connections; medians of the runs")
print("\n| workers | scenario | req/s | req/s per server CPU-s | p50 ms | p99 ms | non-2xx | "
      "peer req/s (per CPU-s) | issuer / peer (wall) | issuer / peer (per CPU-s) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n in workers:
    scenarios = {**load(f"workers-{n}.cc.json"), **load(f"workers-{n}.refresh.json")}
    for key, label, rate in (("client_credentials", "client_credentials", "rps"),
                             ("refresh_rotation", "refresh rotation", "rotations_per_s"),
                             ("jwks", "GET JWKS", "rps")):
        m = scenarios.get(key, {}).get("median")
        if not m:
            continue
        p = peer.get(key, {}).get("median")
        peer_wall = p[rate] if p else None
        peer_cell = f"{p[rate]:.0f} ({p['per_server_cpu_s']:.0f})" if p else "-"
        ratio_wall = f"{m[rate] / peer_wall:.2f}" if p else "-"
        ratio_cpu = f"{m['per_server_cpu_s'] / p['per_server_cpu_s']:.2f}" if p else "-"
        print(f"| {n} | {label} | {m[rate]:.0f} | {m['per_server_cpu_s']:.0f} | {m['lat_ms.p50']:.2f} | "
              f"{m['lat_ms.p99']:.2f} | {m['non2xx']} | {peer_cell} | {ratio_wall} | {ratio_cpu} |")
EOF
