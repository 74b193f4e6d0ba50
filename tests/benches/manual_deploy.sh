#!/usr/bin/env bash
# The baseline of the deploy_overhead benchmark: a code-only blue-green deploy of an Odoo
# addons repository done by hand, with the same steps the oCore agent runs:
#
#   clone   git fetch + checkout in a work clone (its Git directory kept beside the work
#           tree, so the build context is the commit's tree, as the agent's checkout is)
#   build   docker build (classic builder, as bollard uses) with the Dockerfile one writes
#           by hand: FROM <base>, pip install -r requirements.txt when present, addons into
#           /mnt/extra-addons (oCore's is that plus one cached LABEL step); the repository's
#           own Dockerfile when it has one
#   push    docker push to the local registry, digest read back
#   run     docker run the other colour beside the serving one (same command line, env,
#           bind mount, network and restart policy as the agent's colour containers)
#   health  poll GET /web/health ({"status": "pass"}), GET /web/login?db=<db> (proves
#           the database loads) and a websocket upgrade (101); fail early if the container
#           exited
#   switch  rewrite the nginx include (temporary file + rename), nginx -t (previous file
#           put back on failure), nginx -s reload, wait until the public port answers from
#           the new colour on 5 fresh connections in a row
#   drain   give in-flight requests --drain-secs on the old colour
#   stop    docker stop + rm the old colour
#
# It keeps its own state (work clone, active colour) under --state. No module update is run:
# this is the code-only path. Step durations are printed on stdout as `step <name> <ms>`,
# progress and tool output go to stderr.
#
# Usage (every option with a value is required unless it shows a default):
#   manual_deploy.sh --repo URL [--branch main] --state DIR --instance ID --database DB
#       --data-dir DIR --base-image IMAGE [--registry 127.0.0.1:5000] --public-port PORT
#       --blue HTTP:GEVENT --green HTTP:GEVENT [--pg-host 127.0.0.1] [--pg-port 5432]
#       --pg-user USER [--pg-password-file FILE] [--nginx nginx] [--nginx-prefix DIR]
#       [--nginx-config FILE] --nginx-conf-dir DIR [--health-timeout 30] [--drain-secs 1]
#       [--stop-grace 5] [--odoo-uid 101] [--odoo-gid 101]
set -euo pipefail
export LC_ALL=C

die() {
    printf 'manual_deploy: error: %s\n' "$*" >&2
    exit 1
}
say() { printf 'manual_deploy: %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }

repo='' branch=main state='' instance='' database='' data_dir='' base_image=''
registry=127.0.0.1:5000 public_port='' blue='' green='' pg_host=127.0.0.1 pg_port=5432
pg_user='' pg_password_file='' nginx=nginx nginx_prefix='' nginx_config='' nginx_conf_dir=''
health_timeout=30 drain_secs=1 stop_grace=5 odoo_uid=101 odoo_gid=101

while [ "$#" -gt 0 ]; do
    [ "$#" -ge 2 ] || die "option $1 needs a value"
    case "$1" in
        --repo) repo=$2 ;;
        --branch) branch=$2 ;;
        --state) state=$2 ;;
        --instance) instance=$2 ;;
        --database) database=$2 ;;
        --data-dir) data_dir=$2 ;;
        --base-image) base_image=$2 ;;
        --registry) registry=$2 ;;
        --public-port) public_port=$2 ;;
        --blue) blue=$2 ;;
        --green) green=$2 ;;
        --pg-host) pg_host=$2 ;;
        --pg-port) pg_port=$2 ;;
        --pg-user) pg_user=$2 ;;
        --pg-password-file) pg_password_file=$2 ;;
        --nginx) nginx=$2 ;;
        --nginx-prefix) nginx_prefix=$2 ;;
        --nginx-config) nginx_config=$2 ;;
        --nginx-conf-dir) nginx_conf_dir=$2 ;;
        --health-timeout) health_timeout=$2 ;;
        --drain-secs) drain_secs=$2 ;;
        --stop-grace) stop_grace=$2 ;;
        --odoo-uid) odoo_uid=$2 ;;
        --odoo-gid) odoo_gid=$2 ;;
        *) die "unknown option $1" ;;
    esac
    shift 2
done

for required in repo state instance database data_dir base_image public_port blue green \
    pg_user nginx_conf_dir; do
    [ -n "${!required}" ] || die "--${required//_/-} is required"
done
is_number() { [[ $1 =~ ^[0-9]+$ ]]; }
for n in public_port pg_port health_timeout drain_secs stop_grace odoo_uid odoo_gid; do
    is_number "${!n}" || die "--${n//_/-} must be a number, not ${!n}"
done
[[ $blue =~ ^[0-9]+:[0-9]+$ ]] || die "--blue must be HTTP:GEVENT, not $blue"
[[ $green =~ ^[0-9]+:[0-9]+$ ]] || die "--green must be HTTP:GEVENT, not $green"
[[ $instance =~ ^[a-z0-9][a-z0-9_.-]*$ ]] || die "--instance must be lower-case [a-z0-9_.-], not $instance"
[[ $database =~ ^[A-Za-z0-9_.-]+$ ]] || die "--database must be [A-Za-z0-9_.-], not $database"
case "$state" in /*) ;; *) die "--state must be an absolute path" ;; esac
case "$data_dir" in /*) ;; *) die "--data-dir must be an absolute path" ;; esac
for tool in git docker curl "$nginx"; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

nginx_cmd=("$nginx")
[ -n "$nginx_prefix" ] && nginx_cmd+=(-p "$nginx_prefix")
[ -n "$nginx_config" ] && nginx_cmd+=(-c "$nginx_config")

gitdir=$state/git
work=$state/work
active_file=$state/active-colour
mkdir -p -- "$state"

# The step being timed, reported if the script stops on an error.
current=setup
script_started=$(now_ms)
started=$script_started
on_exit() {
    local rc=$?
    [ "$rc" -eq 0 ] || printf 'manual_deploy: failed during step %s (exit %s)\n' "$current" "$rc" >&2
}
trap on_exit EXIT
begin() {
    current=$1
    started=$(now_ms)
}
end() { printf 'step %s %s\n' "$current" "$(($(now_ms) - started))"; }

g() { git --git-dir="$gitdir" --work-tree="$work" "$@"; }

# ---------------------------------------------------------------------------- clone
begin clone
if [ ! -d "$gitdir" ]; then
    git init --quiet --bare -- "$gitdir"
    git --git-dir="$gitdir" config core.bare false
    g remote add origin "$repo"
fi
mkdir -p -- "$work"
g fetch --quiet --prune --tags origin "+refs/heads/*:refs/remotes/origin/*"
sha=$(g rev-parse --quiet --verify "refs/remotes/origin/$branch^{commit}") ||
    die "branch $branch not found in $repo"
g checkout --quiet --force --detach "$sha"
# Exactly the commit's tree: nothing left over from an earlier build.
g clean -ffdxq
tag=${sha:0:12}
say "checked out $tag ($(g log -1 --format=%s "$sha"))"
end

# ---------------------------------------------------------------------------- build
begin build
image_repo=$registry/manual/$instance
image=$image_repo:$tag
addons_path=''
if [ -f "$work/Dockerfile" ]; then
    dockerfile=Dockerfile
else
    dockerfile=.ocore.Dockerfile
    requirements=''
    [ -f "$work/requirements.txt" ] && requirements=requirements.txt
    {
        printf '# Written by hand.\nFROM %s\n' "$base_image"
        if [ -n "$requirements" ]; then
            printf 'USER root\nCOPY %s /tmp/ocore-requirements.txt\n' "$requirements"
            printf 'RUN PIP_BREAK_SYSTEM_PACKAGES=1 pip install --no-cache-dir -r /tmp/ocore-requirements.txt\nUSER odoo\n'
        fi
        printf 'COPY --chown=odoo:odoo . /mnt/extra-addons\n'
    } >"$work/$dockerfile"
    # Every folder that directly holds modules (folders with a __manifest__.py).
    dirs=()
    while IFS= read -r dir; do
        case "$dir" in
            .) dirs+=(/mnt/extra-addons) ;;
            *) dirs+=("/mnt/extra-addons/${dir#./}") ;;
        esac
    done < <(cd "$work" && find . -mindepth 2 -maxdepth 7 -name __manifest__.py -type f \
        -printf '%h\n' | sed 's|/[^/]*$||' | sort -u)
    if [ "${#dirs[@]}" -gt 0 ]; then
        addons_path=$(IFS=,; printf '%s' "${dirs[*]}")
    fi
fi
# No labels: with the classic builder each --label is a build step of its own (about a
# second each here); the script finds its images by their repository, registry/manual/ID.
build_args=(--file "$work/$dockerfile" --tag "$image" --force-rm)
DOCKER_BUILDKIT=0 docker build "${build_args[@]}" -- "$work" >&2
end

# ---------------------------------------------------------------------------- push
begin push
docker push -- "$image" >&2
digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' -- "$image" |
    sed -n "s|^$image_repo@||p" | head -n 1)
[ -n "$digest" ] || die "the registry returned no digest for $image"
say "pushed $image ($digest)"
end

# ---------------------------------------------------------------------------- run
begin run
previous=''
[ -f "$active_file" ] && previous=$(cat -- "$active_file")
case "$previous" in
    blue) target=green ;;
    green | '') target=blue ;;
    *) die "unreadable active colour in $active_file: $previous" ;;
esac
ports=$blue
[ "$target" = green ] && ports=$green
http=${ports%%:*}
gevent=${ports##*:}
new=manual-$instance-$target
old=''
[ -n "$previous" ] && old=manual-$instance-$previous

install -d -o "$odoo_uid" -g "$odoo_gid" -- "$data_dir"
docker rm --force --volumes -- "$new" >/dev/null 2>&1 || true
if [ -n "$pg_password_file" ]; then
    # Through the environment of the docker client: never on a command line.
    PASSWORD=$(cat -- "$pg_password_file")
    export PASSWORD
fi
db_filter=${database//./\\.}
db_filter=${db_filter//-/\\-}
run_args=(--detach --name "$new" --network host --restart no
    --volume "$data_dir:/var/lib/odoo"
    --env "HOST=$pg_host" --env "PORT=$pg_port" --env "USER=$pg_user" --env "OCORE_COMMIT=$sha"
    --label "org.ocore.bench=manual" --label "org.ocore.bench.instance=$instance"
    --label "org.ocore.bench.color=$target" --label "org.ocore.bench.commit=$sha")
[ -n "$pg_password_file" ] && run_args+=(--env PASSWORD)
odoo_args=(odoo "--http-port=$http" "--gevent-port=$gevent" "--database=$database"
    "--db-filter=^$db_filter\$" --proxy-mode)
[ -n "$addons_path" ] && odoo_args+=("--addons-path=$addons_path")
docker run "${run_args[@]}" -- "$image" "${odoo_args[@]}" >/dev/null
say "started $new from $image (http $http, websocket $gevent)"
end

# ---------------------------------------------------------------------------- health
begin health
remove_new() { docker rm --force --volumes -- "$new" >/dev/null 2>&1 || true; }
health_failed() {
    say "last log lines of $new:"
    docker logs --tail 15 -- "$new" >&2 2>&1 || true
    remove_new
    die "$1; $previous keeps serving"
}
deadline=$(($(now_ms) + health_timeout * 1000))
probe_health() {
    local answer
    answer=$(curl --silent --show-error --max-time 5 --write-out '\n%{http_code}' \
        -- "http://127.0.0.1:$http/web/health" 2>&1) || return 1
    [ "${answer##*$'\n'}" = 200 ] && grep -Eq '"status": *"pass"' <<<"$answer"
}
probe_login() {
    curl --silent --fail --output /dev/null --max-time 5 \
        -- "http://127.0.0.1:$http/web/login?db=$database"
}
# The route nginx sends websockets to (the HTTP port: Odoo's default workers = 0).
probe_websocket() {
    local code
    code=$(curl --silent --output /dev/null --max-time 2 --write-out '%{http_code}' \
        -H 'Upgrade: websocket' -H 'Connection: Upgrade' -H 'Sec-WebSocket-Version: 13' \
        -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H "Origin: http://127.0.0.1:$http" \
        -- "http://127.0.0.1:$http/websocket" 2>/dev/null) || true
    [ "$code" = 101 ]
}
for probe in probe_health probe_login probe_websocket; do
    until "$probe"; do
        if [ "$(docker inspect --format '{{.State.Running}}' -- "$new" 2>/dev/null)" != true ]; then
            health_failed "$new exited during start-up"
        fi
        [ "$(now_ms)" -lt "$deadline" ] || health_failed "$probe did not pass within $health_timeout s"
        sleep 0.25
    done
done
docker update --restart unless-stopped -- "$new" >/dev/null
say "$new is healthy"
end

# ---------------------------------------------------------------------------- switch
begin switch
conf=$nginx_conf_dir/manual-$instance.conf
tmp=$nginx_conf_dir/.manual-$instance.conf.tmp
saved=$state/nginx-previous.conf
id=manual_${instance//[-.]/_}
had_previous=false
if [ -f "$conf" ]; then
    cp -- "$conf" "$saved"
    had_previous=true
fi
cat >"$tmp" <<EOF
# Written by manual_deploy.sh for instance $instance.
# active colour: $target
upstream ocore_${id}_http {
    server 127.0.0.1:$http;
    keepalive 16;
}
upstream ocore_${id}_gevent {
    server 127.0.0.1:$gevent;
}
map \$http_upgrade \$ocore_${id}_connection {
    default upgrade;
    ''      close;
}
server {
    listen $public_port;
    client_max_body_size 512m;
    proxy_read_timeout 720s;
    proxy_connect_timeout 10s;
    proxy_send_timeout 720s;
    proxy_set_header Host \$host;
    proxy_set_header X-Real-IP \$remote_addr;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Host \$host;
    proxy_set_header X-Forwarded-Proto \$scheme;
    add_header X-Ocore-Color $target always;
    location /websocket {
        proxy_pass http://ocore_${id}_gevent;
        proxy_http_version 1.1;
        proxy_set_header Upgrade \$http_upgrade;
        proxy_set_header Connection \$ocore_${id}_connection;
    }
    location /longpolling {
        proxy_pass http://ocore_${id}_gevent;
    }
    location / {
        proxy_pass http://ocore_${id}_http;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_redirect off;
    }
}
EOF
mv -f -- "$tmp" "$conf"
if ! "${nginx_cmd[@]}" -t -q; then
    if [ "$had_previous" = true ]; then
        mv -f -- "$saved" "$conf"
    else
        rm -f -- "$conf"
    fi
    remove_new
    die "nginx rejected the new configuration (previous one put back)"
fi
"${nginx_cmd[@]}" -s reload
# The reload is asynchronous: wait until fresh connections land on the new colour.
deadline=$(($(now_ms) + 10000))
streak=0
while [ "$streak" -lt 5 ]; do
    seen=$(curl --silent --max-time 2 --output /dev/null --dump-header - \
        -- "http://127.0.0.1:$public_port/web/health" 2>/dev/null |
        tr -d '\r' | sed -n 's/^[Xx]-[Oo]core-[Cc]olor: *//p' || true)
    if [ "$seen" = "$target" ]; then
        streak=$((streak + 1))
        continue
    fi
    streak=0
    [ "$(now_ms)" -lt "$deadline" ] ||
        die "port $public_port still answers as ${seen:-nothing} 10 s after the reload, not $target"
    sleep 0.05
done
printf '%s\n' "$target" >"$active_file.tmp"
mv -f -- "$active_file.tmp" "$active_file"
say "traffic switched to $target on port $public_port"
end

# ---------------------------------------------------------------------------- drain + stop
begin drain
if [ -n "$old" ] && docker container inspect -- "$old" >/dev/null 2>&1; then
    sleep "$drain_secs"
fi
end
begin stop
if [ -n "$old" ] && docker container inspect -- "$old" >/dev/null 2>&1; then
    docker stop --time "$stop_grace" -- "$old" >/dev/null
    docker rm --volumes -- "$old" >/dev/null
    say "$old stopped and removed"
fi
end

current=finished
printf 'deployed %s on %s image %s total %s\n' "$sha" "$target" "$image" "$(($(now_ms) - script_started))"
