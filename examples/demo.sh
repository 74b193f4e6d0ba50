#!/usr/bin/env bash
# oCore's main job on one machine, end to end:
#   - the services (PostgreSQL, nginx, the registry) and the Odoo test image;
#   - a coordinator with its CA and store, and one local agent enrolled over mutual TLS;
#   - an example project whose addons repository is made from examples/addons;
#   - a first deployment, a second one that changes a module (odoo -u in a maintenance
#     window), the history with every step, and a rollback to the first version.
# The daemons are left running so you can try the CLI; the end says where to look.
#
#   examples/demo.sh          run it (again: state is reused, a fresh repository is deployed)
#   examples/demo.sh stop     stop the demo daemons (state is kept)
#
# State lives in $OCORE_DEMO_DIR (default /var/tmp/ocore-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DEMO_DIR=${OCORE_DEMO_DIR:-/var/tmp/ocore-demo}
API_ADDR=${OCORE_DEMO_API:-127.0.0.1:8800}
AGENT_ADDR=${OCORE_DEMO_AGENT:-127.0.0.1:7700}
PUBLIC_PORT=${OCORE_DEMO_PORT:-18069}
AGENT_NAME=demo-host
OCORE=$root/target/debug/ocore
AGENT=$root/target/debug/ocore-agent
NGINX=/usr/sbin/nginx

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

stop_nginx() {
    if [ -f "$DEMO_DIR/nginx/nginx.pid" ]; then
        "$NGINX" -p "$DEMO_DIR/nginx" -c "$DEMO_DIR/nginx/nginx.conf" -s quit 2>/dev/null || true
        for _ in $(seq 1 50); do [ -f "$DEMO_DIR/nginx/nginx.pid" ] || break; sleep 0.1; done
    fi
}

if [ "${1:-}" = stop ]; then
    stop_daemon agent
    stop_daemon coordinator
    stop_nginx
    echo "demo daemons stopped; state kept in $DEMO_DIR"
    exit 0
fi

say "test environment (PostgreSQL, nginx, registry, Docker)"
bash tests/env/setup.sh

say "build"
cargo build --workspace --bins
bash tests/odoo-image/build.sh

mkdir -p "$DEMO_DIR"
chmod 700 "$DEMO_DIR"
stop_daemon agent
stop_daemon coordinator

say "nginx in front of the instance (port $PUBLIC_PORT)"
mkdir -p "$DEMO_DIR/nginx/conf.d" "$DEMO_DIR/nginx/logs"
cat >"$DEMO_DIR/nginx/nginx.conf" <<EOT
pid $DEMO_DIR/nginx/nginx.pid;
error_log $DEMO_DIR/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $DEMO_DIR/nginx/body;
    proxy_temp_path $DEMO_DIR/nginx/proxy;
    fastcgi_temp_path $DEMO_DIR/nginx/fastcgi;
    uwsgi_temp_path $DEMO_DIR/nginx/uwsgi;
    scgi_temp_path $DEMO_DIR/nginx/scgi;
    include $DEMO_DIR/nginx/conf.d/*.conf;
}
EOT
if [ -f "$DEMO_DIR/nginx/nginx.pid" ] && kill -0 "$(cat "$DEMO_DIR/nginx/nginx.pid")" 2>/dev/null; then
    "$NGINX" -p "$DEMO_DIR/nginx" -c "$DEMO_DIR/nginx/nginx.conf" -s reload
else
    "$NGINX" -p "$DEMO_DIR/nginx" -c "$DEMO_DIR/nginx/nginx.conf"
fi

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
# shellcheck disable=SC1091
. /var/lib/ocore-testenv/env
printf '%s' "$OCORE_TEST_PGPASSWORD" >"$DEMO_DIR/pg-password"
chmod 600 "$DEMO_DIR/pg-password"
cat >"$DEMO_DIR/agent.toml" <<EOT
listen = "$AGENT_ADDR"
state_dir = "$DEMO_DIR/agent"

[registry]
address = "$OCORE_TEST_REGISTRY"

[postgres]
host = "$OCORE_TEST_PGHOST"
port = $OCORE_TEST_PGPORT
user = "$OCORE_TEST_PGUSER"
password_file = "$DEMO_DIR/pg-password"

[nginx]
binary = "$NGINX"
conf_dir = "$DEMO_DIR/nginx/conf.d"
config_file = "$DEMO_DIR/nginx/nginx.conf"
prefix = "$DEMO_DIR/nginx"

[pipeline]
drain_secs = 1
stop_grace_secs = 5

[[instance]]
id = "demo-prod"
database = "ocore_demo_prod"
data_dir = "$DEMO_DIR/odoo/demo-prod"
base_image = "ocore/odoo-test:17.0"
public_port = $PUBLIC_PORT
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
"$OCORE" agent list

say "example project: a Git repository made from examples/addons"
repo=$DEMO_DIR/repo
rm -rf "$repo"
mkdir -p "$repo"
cp -r examples/addons/. "$repo/"
git_() { git -C "$repo" -c user.name="oCore demo" -c user.email="demo@ocore.invalid" "$@"; }
git_ init -q -b main
git_ add -A
git_ commit -qm "First version of the demo addons"
"$OCORE" project show shop >/dev/null 2>&1 ||
    "$OCORE" project create shop --name "Demo shop" --repository "$repo"
"$OCORE" environment show production >/dev/null 2>&1 ||
    "$OCORE" environment create production --project shop --name "Production" --keep-last 10
"$OCORE" instance show shop-prod >/dev/null 2>&1 ||
    "$OCORE" instance create shop-prod --environment production --agent "$AGENT_NAME" --agent-instance demo-prod
"$OCORE" mapping set --project shop --branch main --environment production >/dev/null

say "first deployment (branch main)"
"$OCORE" deploy --project shop --branch main --follow
first=$("$OCORE" deploy list --project shop --limit 1 --output json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["id"])')

say "the operator installs the demo modules (as from Odoo's Apps menu)"
image=$("$OCORE" deploy show "$first" --project shop --output json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("imageRef") or d.get("image") or "")' || true)
if [ -z "$image" ]; then
    image=$(docker inspect --format '{{.Config.Image}}' "$(docker ps -q --filter label=org.ocore.instance=demo-prod | head -1)")
fi
# The database server as the image's entrypoint reads it (PASSWORD from the environment of
# this docker client, not from its command line).
PASSWORD=$(cat "$DEMO_DIR/pg-password") docker run --rm --network host \
    -e HOST="$OCORE_TEST_PGHOST" -e PORT="$OCORE_TEST_PGPORT" -e USER="$OCORE_TEST_PGUSER" -e PASSWORD \
    -v "$DEMO_DIR/odoo/demo-prod:/var/lib/odoo" "$image" \
    odoo -d ocore_demo_prod -i ocore_demo_sale --stop-after-init --addons-path=/mnt/extra-addons >/dev/null
echo "installed ocore_demo and ocore_demo_sale in ocore_demo_prod"

say "second deployment: ocore_demo changes, so odoo -u runs in a maintenance window"
sed -i 's/Hello from the first version/Hello from the second version/' "$repo/ocore_demo/models.py"
git_ commit -qam "Change the demo greeting"
"$OCORE" deploy --project shop --branch main --follow
second=$("$OCORE" deploy list --project shop --limit 1 --output json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["id"])')

say "history"
"$OCORE" deploy list --project shop --limit 5
say "the second deployment, step by step"
"$OCORE" deploy show "$second" --project shop

say "roll back the second deployment (its pre-deploy snapshot and the image before it)"
"$OCORE" deploy rollback --deployment "$second" --project shop --yes --follow

say "what serves now"
curl -fsS "http://127.0.0.1:$PUBLIC_PORT/" | head -5 || true

cat <<EOT

oCore is running.
  coordinator API:  $OCORE_URL   (log: $DEMO_DIR/coordinator.log)
  OpenAPI:          $OCORE_URL/api/openapi.json
  dashboard:        $OCORE_URL/   (sign in with the admin token below)
  agent:            $AGENT_ADDR  (log: $DEMO_DIR/agent.log)
  Odoo (via nginx): http://127.0.0.1:$PUBLIC_PORT/
  admin token:      in $DEMO_DIR/coordinator/initial-admin-token

Try:
  export OCORE_URL=$OCORE_URL
  export OCORE_TOKEN=\$(cat $DEMO_DIR/coordinator/initial-admin-token)
  $OCORE deploy list --project shop
  $OCORE deploy show $second --project shop
  $OCORE snapshot list --environment production
  $OCORE deploy --project shop --branch main --follow
  $OCORE webhook reconfigure --project shop      # URLs and a secret for GitHub, GitLab or Bitbucket
  examples/demo.sh stop
EOT
