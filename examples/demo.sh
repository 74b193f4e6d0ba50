#!/usr/bin/env bash
# oCore's main job on one machine, end to end: a coordinator with its CA and store, and one
# local agent enrolled over mutual TLS, both left running so you can try the CLI.
#
#   examples/demo.sh          set up what is missing, (re)start both daemons, show the status
#   examples/demo.sh stop     stop the demo daemons (state is kept)
#
# Re-running is safe: existing state (CA, store, agent identity) is reused, daemons restarted.
# State lives in $OCORE_DEMO_DIR (default /var/tmp/ocore-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DEMO_DIR=${OCORE_DEMO_DIR:-/var/tmp/ocore-demo}
API_ADDR=${OCORE_DEMO_API:-127.0.0.1:8800}
AGENT_ADDR=${OCORE_DEMO_AGENT:-127.0.0.1:7700}
AGENT_NAME=demo-host
OCORE=$root/target/debug/ocore
AGENT=$root/target/debug/ocore-agent

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

stop_daemon() { # name
    local pidfile=$DEMO_DIR/$1.pid
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

start_daemon() { # name log-marker command...
    local name=$1 marker=$2
    shift 2
    : >"$DEMO_DIR/$name.log"
    setsid nohup "$@" </dev/null >>"$DEMO_DIR/$name.log" 2>&1 &
    echo $! >"$DEMO_DIR/$name.pid"
    for _ in $(seq 1 300); do
        grep -q "$marker" "$DEMO_DIR/$name.log" && return 0
        kill -0 "$(cat "$DEMO_DIR/$name.pid")" 2>/dev/null || break
        sleep 0.1
    done
    cat "$DEMO_DIR/$name.log" >&2
    die "$name did not start; its log is above and in $DEMO_DIR/$name.log"
}

if [ "${1:-}" = stop ]; then
    stop_daemon agent
    stop_daemon coordinator
    echo "demo daemons stopped; state kept in $DEMO_DIR"
    exit 0
fi

say "test environment (PostgreSQL, nginx, registry, Docker)"
bash tests/env/setup.sh

say "build"
cargo build --workspace --bins

mkdir -p "$DEMO_DIR"
chmod 700 "$DEMO_DIR"
stop_daemon agent
stop_daemon coordinator

say "coordinator"
cat >"$DEMO_DIR/coordinator.toml" <<EOT
listen = "$API_ADDR"
state_dir = "$DEMO_DIR/coordinator"

[agents]
poll_interval_secs = 2
EOT
if [ ! -f "$DEMO_DIR/coordinator/ca/ca.key" ]; then
    "$OCORE" ca init --config "$DEMO_DIR/coordinator.toml"
fi
start_daemon coordinator "REST API listening on" "$OCORE" server --config "$DEMO_DIR/coordinator.toml"
export OCORE_URL="http://$API_ADDR"
OCORE_TOKEN=$(cat "$DEMO_DIR/coordinator/initial-admin-token")
export OCORE_TOKEN
echo "coordinator serving $OCORE_URL"

say "agent $AGENT_NAME"
cat >"$DEMO_DIR/agent.toml" <<EOT
listen = "$AGENT_ADDR"
state_dir = "$DEMO_DIR/agent"

[registry]
address = "127.0.0.1:5000"

[postgres]
host = "127.0.0.1"
port = 5432
user = "ocore"

[nginx]
binary = "/usr/sbin/nginx"
conf_dir = "$DEMO_DIR/nginx"

[[instance]]
id = "demo-prod"
database = "demo_prod"
data_dir = "$DEMO_DIR/odoo/demo-prod"
base_image = "ocore/odoo-test:17.0"
public_port = 18069
blue = { http = 18169, gevent = 18172 }
green = { http = 18269, gevent = 18272 }
EOT
"$AGENT" check-config --config "$DEMO_DIR/agent.toml" >/dev/null 2>&1 || {
    # Not enrolled yet (or its registration was lost): register and enrol it.
    "$OCORE" agent remove "$AGENT_NAME" >/dev/null 2>&1 || true
    token=$("$OCORE" agent add "$AGENT_NAME" --address "$AGENT_ADDR" --output json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["enrolmentToken"])')
    "$AGENT" enroll --config "$DEMO_DIR/agent.toml" --coordinator "$OCORE_URL" --token "$token" --force
}
start_daemon agent "listening on" "$AGENT" run --config "$DEMO_DIR/agent.toml"
for _ in $(seq 1 100); do
    "$OCORE" agent show "$AGENT_NAME" --output json 2>/dev/null | grep -q '"status": "connected"' && break
    sleep 0.2
done

say "agents as the coordinator sees them"
"$OCORE" agent list
say "live call to the agent over mutual TLS"
"$OCORE" agent ping "$AGENT_NAME"

cat <<EOT

oCore is running.
  coordinator API:  $OCORE_URL   (log: $DEMO_DIR/coordinator.log)
  agent:            $AGENT_ADDR  (log: $DEMO_DIR/agent.log)
  admin token:      in $DEMO_DIR/coordinator/initial-admin-token

Try:
  export OCORE_URL=$OCORE_URL
  export OCORE_TOKEN=\$(cat $DEMO_DIR/coordinator/initial-admin-token)
  $OCORE agent list
  $OCORE agent ping $AGENT_NAME
  $OCORE token create --name ci --project shop --permission manage:deployments
  examples/demo.sh stop
EOT
