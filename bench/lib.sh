# What the bench scripts share (sourced right after they set $root): paths, the settings every
# script takes from the environment, and small helpers.
py="$root/.venv/bin/python"
issuer="$root/.venv/bin/issuer"
harness_src="${HARNESS:-$root/../shared/bench}"
admin_url="${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
connections="${CONNECTIONS:-32}"
duration="${DURATION:-10}"
runs="${RUNS:-3}"
rt_count="${RT_COUNT:-10000}"
rt_warmup="${RT_WARMUP:-2000}"

log() { printf '== %s\n' "$*" >&2; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # URL PID LOGFILE: until URL answers (30 s at most), or the server exits
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; echo "server exited during start" >&2; return 1; }
    sleep 0.1
  done
  cat "$3" >&2; echo "server did not answer $1" >&2; return 1
}
