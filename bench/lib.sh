# Helpers shared by the bench scripts (sourced; expects $py to name a Python interpreter).
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
