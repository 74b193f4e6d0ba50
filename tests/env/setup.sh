#!/usr/bin/env bash
# oCore test environment (design.md section 9): the real services the tests drive.
#
#   tests/env/setup.sh           install what is missing, start what is down, write the env file
#   tests/env/setup.sh --check   only check; exit non-zero naming what is missing
#
# Brings up, without systemd (CI's PID 1 is not systemd):
#   - Debian packages: postgresql nginx docker-registry zstd busybox-static curl git openssl
#     chromium chromium-driver fonts-dejavu-core (the dashboard's headless-browser test);
#     openssh-server fcgiwrap (the private-repository tests run their own sshd and
#     git-http-backend); for the packaging checks dpkg-dev binutils rpm lintian rpmlint
#     adduser man-db systemd mmdebstrap; docker.io too, only when no Docker Engine answers
#     and dockerd is not installed; for the fault and fuzz tests iptables (cutting the
#     agent's link) and python3-venv (schemathesis, by tests/fuzz/api.sh);
#   - PostgreSQL 15 cluster "main" on 127.0.0.1:5432, superuser role ocore/ocore (SCRAM password);
#   - Debian's docker-registry on 127.0.0.1:5000 (filesystem storage, deletes enabled);
#   - dockerd, only when `docker info` does not answer;
#   - nginx: installed only, never started (tests run their own instances with -p/-c);
#   - sshd and fcgiwrap (the private-repository tests' Git servers): installed only, never
#     started (tests run their own on free ports); /run/sshd, which sshd needs, is created;
#   - reference data for the module checksum tests (from PyPI): click-odoo-contrib in its own
#     virtualenv (/var/lib/ocore-testenv/pyref), and real OCA module trees of Odoo 16, 17
#     and 18 from their wheels (/var/lib/ocore-testenv/oca/<series>/<module>);
#   - /var/lib/ocore-testenv/env: shell-sourceable exports the tests read.
# Idempotent; a run with everything already up only checks (well under 2 s).
# Run as root (CI does). As another user, an all-up environment is just checked; otherwise the
# script re-runs itself through sudo.
set -euo pipefail

PG_VER=15
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=ocore
PG_PASS=ocore
PG_LOG=/var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log

REG_ADDR=127.0.0.1:5000
NGINX=/usr/sbin/nginx

STATE_DIR=/var/lib/ocore-testenv
LOG_DIR=/var/log/ocore-testenv
REG_DIR=$STATE_DIR/registry
REG_CONF=$STATE_DIR/registry.yml
REG_PIDFILE=$STATE_DIR/registry.pid
REG_LOG=$LOG_DIR/registry.log
DOCKERD_LOG=$LOG_DIR/dockerd.log
APT_LOG=$LOG_DIR/apt.log
PG_SETUP_LOG=$LOG_DIR/postgresql-setup.log
ENV_FILE=$STATE_DIR/env
PYREF_DIR=$STATE_DIR/pyref
OCA_DIR=$STATE_DIR/oca
# click-odoo-contrib's addon_hash is the reference the agent's checksums must equal.
CLICK_ODOO_CONTRIB=1.24
# Real OCA modules, pinned: their i18n folders hold dozens of languages.
OCA_WHEELS=(
    auditlog==16.0.3.0.5.1 web-responsive==16.0.1.4.0.7 date-range==16.0.1.0.9.13
    auditlog==17.0.1.1.1 web-responsive==17.0.1.1.11 date-range==17.0.1.2.1.5 web-dialog-size==17.0.1.0.2
    web-responsive==18.0.1.0.10.1 server-environment==18.0.1.1.5 auditlog==18.0.2.0.9.5
    base-technical-features==18.0.1.0.2.3 mail-debrand==18.0.1.0.1.5
)
LOCK_FILE=$STATE_DIR/setup.lock
POLICY_RC=/usr/sbin/policy-rc.d

PACKAGES=(postgresql nginx docker-registry zstd busybox-static curl git openssl
          chromium chromium-driver fonts-dejavu-core openssh-server fcgiwrap)
SSHD=/usr/sbin/sshd
SSHD_PRIVSEP=/run/sshd
# For tests/packaging/check.sh: building, linting and installing the debs and rpms,
# systemd-analyze, and the Debian root file system of its systemd container.
PACKAGES+=(dpkg-dev binutils rpm lintian rpmlint adduser man-db systemd mmdebstrap)
# For the fault and fuzz tests: cutting the agent's link, and schemathesis's virtualenv.
PACKAGES+=(iptables python3-venv)

REG_TIMEOUT=20
PG_TIMEOUT=30
DOCKERD_TIMEOUT=60

SELF=$(basename "$0")
export DEBIAN_FRONTEND=noninteractive

say() { printf '%s: %s\n' "$SELF" "$*"; }
die() { printf '%s: FAILED: %s\n' "$SELF" "$*" >&2; exit 1; }

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
}

CHECK_ONLY=false
for arg in "$@"; do
    case $arg in
        --check) CHECK_ONLY=true ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$arg'; usage: $0 [--check]" ;;
    esac
done

START=${EPOCHREALTIME:-}

# ---------------------------------------------------------------------------------------------
# Checks. Each returns 0 when its part is up; on failure it sets WHY to one line saying what is
# wrong. They change nothing and need no root.

WHY=
MISSING_PKGS=()
DOCKER_VERSION=
PG_VERSION=
PG_ENCODING=
REG_PID=
NGINX_VERSION=

check_packages() {
    MISSING_PKGS=()
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=
        [[ $status == *" ok installed" ]] || MISSING_PKGS+=("$p")
    done
    ((${#MISSING_PKGS[@]} == 0)) && return 0
    WHY="Debian packages not installed: ${MISSING_PKGS[*]}"
    return 1
}

check_docker() {
    DOCKER_VERSION=$(timeout 10 docker info --format '{{.ServerVersion}}' 2>/dev/null) \
        && [[ -n $DOCKER_VERSION ]] && return 0
    DOCKER_VERSION=
    WHY="Docker Engine: 'docker info' did not answer within 10s"
    return 1
}

# One query over TCP with the password: the role exists, logs in, is superuser, has a SCRAM
# password. Reading pg_authid itself needs superuser, so a non-superuser ocore fails here too.
PG_CHECK_SQL="select a.rolsuper and coalesce(a.rolpassword like 'SCRAM-SHA-256\$%', false),
                     current_setting('server_version'), current_setting('server_encoding')
              from pg_authid a where a.rolname = current_user"
check_pg() {
    local out ok ver enc
    out=$(PGPASSWORD=$PG_PASS PGCONNECT_TIMEOUT=5 psql -X -w -q -At -F '|' \
            -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "$PG_CHECK_SQL" 2>/dev/null) \
        || {
            if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 2>/dev/null; then
                WHY="PostgreSQL: cannot log in as $PG_USER/$PG_PASS over TCP on $PG_HOST:$PG_PORT"
            else
                WHY="PostgreSQL: nothing accepts connections on $PG_HOST:$PG_PORT (cluster $PG_VER/$PG_CLUSTER down?)"
            fi
            return 1
        }
    IFS='|' read -r ok ver enc <<<"$out"
    [[ $ok == t ]] \
        || { WHY="PostgreSQL: role $PG_USER is not a superuser with a SCRAM password"; return 1; }
    PG_VERSION=${ver%% *}
    PG_ENCODING=$enc
}

registry_config() {
    cat <<EOF
# Written by tests/env/setup.sh (oCore test environment); rewritten when it changes.
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $REG_DIR
  delete:
    enabled: true
http:
  addr: $REG_ADDR
EOF
}

# Sets REG_PID when the pidfile names a live docker-registry serving our config.
registry_ours() {
    local pid cmd
    REG_PID=
    pid=$(cat "$REG_PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == *docker-registry*" serve $REG_CONF"* ]] || return 1
    REG_PID=$pid
}

registry_answers() {
    curl -fsS --max-time 2 -o /dev/null "http://$REG_ADDR/v2/" 2>/dev/null
}

check_registry() {
    if ! registry_answers; then
        WHY="registry: no answer on http://$REG_ADDR/v2/"
        return 1
    fi
    if ! registry_ours; then
        WHY="registry: $REG_ADDR answers but is not the docker-registry this script starts (pidfile $REG_PIDFILE)"
        return 1
    fi
    if [[ "$(cat "$REG_CONF" 2>/dev/null)" != "$(registry_config)" ]]; then
        WHY="registry: config $REG_CONF is out of date"
        return 1
    fi
}

check_nginx() {
    NGINX_VERSION=$("$NGINX" -v 2>&1) && NGINX_VERSION=${NGINX_VERSION#nginx version: } && return 0
    NGINX_VERSION=
    WHY="nginx: '$NGINX -v' does not work"
    return 1
}

# The system sshd is never started: tests run their own (own config, host key and port).
check_sshd() {
    [[ -x $SSHD && -x /usr/sbin/fcgiwrap && -x /usr/lib/git-core/git-http-backend ]] \
        || { WHY="sshd, fcgiwrap or git-http-backend missing (packages openssh-server fcgiwrap git)"; return 1; }
    [[ -d $SSHD_PRIVSEP ]] && return 0
    WHY="sshd's privilege separation directory $SSHD_PRIVSEP is missing"
    return 1
}

env_file_content() {
    cat <<EOF
# oCore test environment, written by tests/env/setup.sh. Source it: . $ENV_FILE
export OCORE_TEST_PG_URL=postgres://$PG_USER:$PG_PASS@$PG_HOST:$PG_PORT/postgres
export OCORE_TEST_PGHOST=$PG_HOST
export OCORE_TEST_PGPORT=$PG_PORT
export OCORE_TEST_PGUSER=$PG_USER
export OCORE_TEST_PGPASSWORD=$PG_PASS
export OCORE_TEST_REGISTRY=$REG_ADDR
export OCORE_TEST_NGINX=$NGINX
export OCORE_TEST_PYREF=$PYREF_DIR/bin/python
export OCORE_TEST_OCA=$OCA_DIR
EOF
}

# What the reference data must hold, one line per item (compared with its stamp file).
reference_stamp() {
    printf 'click-odoo-contrib==%s\n' "$CLICK_ODOO_CONTRIB"
    printf '%s\n' "${OCA_WHEELS[@]}"
}

check_reference() {
    if [[ "$(cat "$STATE_DIR/reference.stamp" 2>/dev/null)" == "$(reference_stamp)" ]] \
        && [[ -x $PYREF_DIR/bin/python ]] && [[ -d $OCA_DIR/18.0 ]]; then
        return 0
    fi
    WHY="the checksum reference data (click-odoo-contrib $CLICK_ODOO_CONTRIB, OCA wheels) in $STATE_DIR is missing"
    return 1
}

# click-odoo-contrib in a virtualenv (without its dependencies: the test imports only its
# `_addon_hash`, which needs none), and the OCA wheels unpacked by series.
ensure_reference() {
    check_reference && return 0
    say "installing click-odoo-contrib $CLICK_ODOO_CONTRIB and ${#OCA_WHEELS[@]} OCA module wheels from PyPI"
    rm -rf "$PYREF_DIR" "$OCA_DIR" "$STATE_DIR/oca-wheels"
    python3 -m venv "$PYREF_DIR" >>"$APT_LOG" 2>&1 \
        || die "cannot create a virtualenv in $PYREF_DIR (python3-venv missing?)"
    "$PYREF_DIR/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        "click-odoo-contrib==$CLICK_ODOO_CONTRIB" >>"$APT_LOG" 2>&1 \
        || die "pip could not install click-odoo-contrib==$CLICK_ODOO_CONTRIB from PyPI; see $APT_LOG"
    local wheels=$STATE_DIR/oca-wheels spec
    mkdir -p "$wheels"
    for spec in "${OCA_WHEELS[@]}"; do
        "$PYREF_DIR/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            --dest "$wheels" "odoo-addon-$spec" >>"$APT_LOG" 2>&1 \
            || die "pip could not download odoo-addon-$spec from PyPI; see $APT_LOG"
    done
    "$PYREF_DIR/bin/python" - "$wheels" "$OCA_DIR" <<'PY' || die "cannot unpack the OCA wheels in $OCA_DIR"
import pathlib, re, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    series = re.search(r"-(\d+\.0)\.", wheel.name).group(1)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("odoo/addons/") and not name.endswith("/"):
                target = out / series / name[len("odoo/addons/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
PY
    reference_stamp >"$STATE_DIR/reference.stamp"
}

check_env_file() {
    [[ "$(cat "$ENV_FILE" 2>/dev/null)" == "$(env_file_content)" ]] && return 0
    WHY="env file $ENV_FILE is missing or out of date"
    return 1
}

# Runs every check; prints one line per failure when $1 is "report". Returns 1 if any failed.
check_all() {
    local failed=0 c
    for c in check_packages check_docker check_pg check_registry check_nginx check_sshd check_reference check_env_file; do
        if ! $c; then
            failed=1
            [[ ${1:-} == report ]] && printf '%s: missing: %s\n' "$SELF" "$WHY" >&2
        fi
    done
    return $failed
}

summary() {
    local took=
    if [[ -n $START && -n ${EPOCHREALTIME:-} ]]; then
        took=$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf " in %.2fs", b - a }')
    fi
    say "postgresql: PostgreSQL ${PG_VERSION:-?} ($PG_VER/$PG_CLUSTER) on $PG_HOST:$PG_PORT, ${PG_ENCODING:-?}, superuser $PG_USER/$PG_PASS (scram); log $PG_LOG"
    say "registry:   docker-registry pid ${REG_PID:-?} on $REG_ADDR, storage $REG_DIR, deletes on; log $REG_LOG"
    say "docker:     engine ${DOCKER_VERSION:-?} answers 'docker info'"
    say "nginx:      $NGINX (${NGINX_VERSION:-?}), not started (tests run their own)"
    say "git:        $SSHD and fcgiwrap + git-http-backend installed, not started (tests run their own)"
    say "env:        $ENV_FILE"
    say "test environment ready$took"
}

# ---------------------------------------------------------------------------------------------
# --check, and the fast path.

if $CHECK_ONLY; then
    if check_all report; then
        summary
        exit 0
    fi
    die "test environment incomplete; run tests/env/setup.sh (as root) to set it up"
fi

# Everything up already (the usual case): nothing to do, and no root needed.
if check_all; then
    summary
    exit 0
fi

if ((EUID != 0)); then
    check_all report || true
    if [[ -S /var/run/docker.sock && ! -w /var/run/docker.sock ]]; then
        say "note: you cannot use /var/run/docker.sock; the tests need that too (add yourself to the 'docker' group)"
    fi
    if command -v sudo >/dev/null 2>&1; then
        say "something is missing; re-running as root through sudo"
        exec sudo -- bash "$0" "$@"
    fi
    die "setup must install or start services and needs root; rerun as root: sudo $0"
fi

# ---------------------------------------------------------------------------------------------
# Setup (root). One run at a time: a lock on fd 9. Every daemon started below gets 9>&- so it
# does not inherit (and keep) the lock, and gets its own stdin/stdout/stderr so it does not
# keep a caller's pipe (CI's log) open.

mkdir -p "$STATE_DIR" "$LOG_DIR" "$REG_DIR"
exec 9>"$LOCK_FILE"
flock -w 300 9 || die "another tests/env/setup.sh run held $LOCK_FILE for 300s; wait for it or kill it"

POLICY_RC_OURS=false
cleanup() {
    if $POLICY_RC_OURS; then rm -f "$POLICY_RC"; fi
}
trap cleanup EXIT

# Packages' postinst scripts must not start their services: Debian's docker-registry would
# take 127.0.0.1:5000 with its own config, nginx its default site on port 80, postgresql its
# cluster. A policy-rc.d that answers 101 makes invoke-rc.d skip every start, and dpkg still
# ends with the packages configured. An existing policy-rc.d is left as it is.
block_service_starts() {
    [[ -e $POLICY_RC ]] && return 0
    printf '#!/bin/sh\n# Temporary, from the oCore tests/env/setup.sh: no service starts during apt-get.\nexit 101\n' >"$POLICY_RC"
    chmod 755 "$POLICY_RC"
    POLICY_RC_OURS=true
}

apt_install() {
    local pkgs=("$@")
    say "installing Debian packages: ${pkgs[*]} (log $APT_LOG)"
    block_service_starts
    {
        printf '\n=== %s: apt-get install %s\n' "$(date -Is)" "${pkgs[*]}"
    } >>"$APT_LOG"
    # A package left half-configured by an earlier run would make apt-get refuse to work.
    dpkg --configure -a >>"$APT_LOG" 2>&1 \
        || { tail -n 15 "$APT_LOG" >&2; die "'dpkg --configure -a' failed; see $APT_LOG"; }
    apt-get -q -o DPkg::Lock::Timeout=120 update >>"$APT_LOG" 2>&1 \
        || { tail -n 15 "$APT_LOG" >&2; die "'apt-get update' failed (network or apt sources?); see $APT_LOG"; }
    apt-get -q -y -o DPkg::Lock::Timeout=120 install --no-install-recommends "${pkgs[@]}" >>"$APT_LOG" 2>&1 \
        || { tail -n 15 "$APT_LOG" >&2; die "'apt-get install ${pkgs[*]}' failed; see $APT_LOG"; }
    if $POLICY_RC_OURS; then rm -f "$POLICY_RC"; POLICY_RC_OURS=false; fi
}

# Waits until "$@" succeeds, at most $1 seconds (polling, no fixed sleep). Returns 1 on timeout.
wait_for() {
    local timeout=$1 end
    shift
    end=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < end)) || return 1
        sleep 0.1
    done
}

# A daemon that died while this script waits for it stays a zombie child of the script, which
# kill -0 still finds: read its state instead.
pid_alive() {
    local state
    [[ -n $1 ]] && state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [[ -n $state && $state != Z* ]]
}
pid_gone() { ! pid_alive "$1"; }

# --- Docker (checked first: whether docker.io must be installed joins the one apt-get run) ---

DOCKER_UP=false
EXTRA_PKGS=()
if check_docker; then
    DOCKER_UP=true
else
    docker_host=${DOCKER_HOST:-}
    case $docker_host in
        ''|unix:///var/run/docker.sock|unix:///run/docker.sock) ;;
        *) die "the Docker Engine at DOCKER_HOST=$docker_host did not answer 'docker info' within 10s; start that engine or unset DOCKER_HOST" ;;
    esac
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        EXTRA_PKGS+=(docker.io)
    fi
fi

# --- Packages ---

if ! check_packages || ((${#EXTRA_PKGS[@]} > 0)); then
    apt_install "${MISSING_PKGS[@]}" "${EXTRA_PKGS[@]}"
    check_packages || die "$WHY even after apt-get install; see $APT_LOG"
fi

# --- Docker, started here only when no engine answered ---

start_dockerd() {
    local pid
    pid=$(cat /var/run/docker.pid 2>/dev/null) || pid=
    if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
        die "dockerd (pid $pid) is running but 'docker info' did not answer within 10s; see its log ($DOCKERD_LOG if this script started it) and restart it"
    fi
    say "no Docker Engine answers; starting dockerd (log $DOCKERD_LOG)"
    setsid nohup dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    pid=$!
    local end=$((SECONDS + DOCKERD_TIMEOUT))
    until check_docker; do
        pid_alive "$pid" \
            || die "dockerd exited during start-up; see $DOCKERD_LOG ($(tail -n 1 "$DOCKERD_LOG" 2>/dev/null | cut -c1-200))"
        ((SECONDS < end)) \
            || die "dockerd did not answer 'docker info' within ${DOCKERD_TIMEOUT}s; see $DOCKERD_LOG"
        sleep 0.2
    done
}

if ! $DOCKER_UP; then
    start_dockerd
fi

# --- PostgreSQL ---

pg_tcp_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 1; }

# psql as the postgres superuser over the unix socket (peer auth): works whatever ocore's state.
pg_admin() {
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@")
}

ensure_pg() {
    check_pg && return 0

    if [[ ! -d /etc/postgresql/$PG_VER/$PG_CLUSTER ]]; then
        say "creating PostgreSQL cluster $PG_VER/$PG_CLUSTER"
        # C.UTF-8 explicitly: with no LANG in the environment initdb would pick C and SQL_ASCII.
        pg_createcluster --port "$PG_PORT" --locale C.UTF-8 "$PG_VER" "$PG_CLUSTER" </dev/null >>"$PG_SETUP_LOG" 2>&1 9>&- \
            || die "pg_createcluster $PG_VER $PG_CLUSTER failed; see $PG_SETUP_LOG"
    fi

    local line port status
    line=$(pg_lsclusters -h "$PG_VER" "$PG_CLUSTER" 2>/dev/null) \
        || die "pg_lsclusters does not know cluster $PG_VER/$PG_CLUSTER; see /etc/postgresql/$PG_VER/$PG_CLUSTER"
    read -r _ _ port status _ <<<"$line"
    [[ $port == "$PG_PORT" ]] \
        || die "PostgreSQL cluster $PG_VER/$PG_CLUSTER is set to port $port, not $PG_PORT; set 'port = $PG_PORT' in /etc/postgresql/$PG_VER/$PG_CLUSTER/postgresql.conf"

    if [[ $status != online* ]]; then
        say "starting PostgreSQL $PG_VER/$PG_CLUSTER"
        # /run is empty after a boot, and no systemd-tmpfiles recreates the socket directory.
        install -d -o postgres -g postgres -m 2775 /var/run/postgresql
        pg_ctlcluster "$PG_VER" "$PG_CLUSTER" start </dev/null >>"$PG_SETUP_LOG" 2>&1 9>&- \
            || die "PostgreSQL $PG_VER/$PG_CLUSTER did not start (is port $PG_PORT taken?); see $PG_LOG and $PG_SETUP_LOG"
    fi
    wait_for "$PG_TIMEOUT" pg_tcp_ready \
        || die "PostgreSQL $PG_VER/$PG_CLUSTER does not accept TCP connections on $PG_HOST:$PG_PORT within ${PG_TIMEOUT}s; check listen_addresses in /etc/postgresql/$PG_VER/$PG_CLUSTER/postgresql.conf and $PG_LOG"

    check_pg && return 0

    say "setting up PostgreSQL role $PG_USER"
    pg_admin >>"$PG_SETUP_LOG" 2>&1 <<SQL || die "could not create/alter role $PG_USER as the postgres superuser over the unix socket; see $PG_SETUP_LOG"
SET password_encryption = 'scram-sha-256';
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER')\gexec
ALTER ROLE $PG_USER WITH LOGIN SUPERUSER PASSWORD '$PG_PASS';
SQL
    check_pg && return 0

    # The role is right, so pg_hba.conf rejects password logins from 127.0.0.1: put a rule for
    # ocore in front and reload.
    local hba
    hba=$(pg_admin -At -c 'show hba_file' 2>>"$PG_SETUP_LOG") \
        || die "could not read hba_file of PostgreSQL $PG_VER/$PG_CLUSTER; see $PG_SETUP_LOG"
    say "allowing scram logins for $PG_USER from $PG_HOST in $hba"
    { printf 'host all %s %s/32 scram-sha-256  # added by oCore tests/env/setup.sh\n' "$PG_USER" "$PG_HOST"
      cat "$hba"; } >"$hba.ocore-tmp" \
        && chown --reference="$hba" "$hba.ocore-tmp" && chmod --reference="$hba" "$hba.ocore-tmp" \
        && mv "$hba.ocore-tmp" "$hba" \
        || die "could not update $hba"
    pg_admin -c 'select pg_reload_conf()' >>"$PG_SETUP_LOG" 2>&1 \
        || die "could not reload PostgreSQL $PG_VER/$PG_CLUSTER; see $PG_SETUP_LOG"
    wait_for 5 check_pg \
        || die "password login as $PG_USER over TCP on $PG_HOST:$PG_PORT still fails; check $hba and $PG_LOG"
}

ensure_pg

# --- Registry ---

stop_registry() {
    local pid=$1
    say "stopping docker-registry pid $pid"
    kill "$pid" 2>/dev/null || true
    wait_for 10 pid_gone "$pid" || { kill -9 "$pid" 2>/dev/null || true; wait_for 5 pid_gone "$pid"; } \
        || die "docker-registry pid $pid does not exit; kill it by hand"
}

ensure_registry() {
    local want changed=false
    want=$(registry_config)
    if [[ "$(cat "$REG_CONF" 2>/dev/null)" != "$want" ]]; then
        printf '%s\n' "$want" >"$REG_CONF.tmp" && mv "$REG_CONF.tmp" "$REG_CONF"
        changed=true
    fi

    if registry_ours; then
        if ! $changed && registry_answers; then
            return 0
        fi
        stop_registry "$REG_PID"
    fi

    # Something else on the port: Debian's own docker-registry service (other config and
    # storage, no deletes) or a leftover. Say who, and do not touch it.
    local port=${REG_ADDR##*:} holder
    holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1 | tr -s ' ') || holder=
    if [[ -n $holder ]] || registry_answers; then
        die "port $port is already taken by another process (${holder:-answers /v2/}); stop it (Debian's service: 'service docker-registry stop', or 'systemctl disable --now docker-registry') and rerun"
    fi

    say "starting docker-registry on $REG_ADDR (log $REG_LOG)"
    printf '\n=== %s: docker-registry serve %s\n' "$(date -Is)" "$REG_CONF" >>"$REG_LOG"
    setsid nohup docker-registry serve "$REG_CONF" </dev/null >>"$REG_LOG" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$REG_PIDFILE"
    local end=$((SECONDS + REG_TIMEOUT))
    until registry_answers; do
        pid_alive "$pid" \
            || die "docker-registry exited during start-up; see $REG_LOG ($(tail -n 1 "$REG_LOG" 2>/dev/null | cut -c1-200))"
        ((SECONDS < end)) \
            || die "registry did not answer on $REG_ADDR within ${REG_TIMEOUT}s; see $REG_LOG"
        sleep 0.1
    done
    registry_ours || die "the process answering on $REG_ADDR is not the docker-registry just started (pid $pid); see $REG_LOG"
}

ensure_registry

# --- nginx: installed and runnable; never started here ---

check_nginx || die "$WHY; reinstall it: apt-get install --reinstall nginx"

# --- sshd and fcgiwrap: installed; never started here. /run is emptied at boot. ---

# Debian's postinst may have started the system sshd when no policy-rc.d blocked it; it is
# left alone (the tests never use port 22).
install -d -m 0755 "$SSHD_PRIVSEP"
check_sshd || die "$WHY; reinstall them: apt-get install --reinstall openssh-server fcgiwrap git"

# --- reference data of the checksum tests (PyPI) ---

ensure_reference

# --- env file, and a last full check ---

if ! check_env_file; then
    env_file_content >"$ENV_FILE.tmp" && chmod 644 "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
fi

check_all report || die "test environment still incomplete after setup (see the lines above)"
summary
