#!/usr/bin/env bash
# Checks the oCore packages end to end on a Debian host, as root:
#
#   tests/packaging/check.sh                        packages the release binaries
#   tests/packaging/check.sh --profile dev          packages the debug binaries (tests/run.sh)
#   tests/packaging/check.sh [...] --systemd        also runs the debs under a real systemd
#                                                   (tests/packaging/systemd.sh; Docker)
#
# Builds the packages (packaging/build.sh, given the other arguments), lints the debs
# (lintian) and the rpms (rpmlint), verifies both systemd units and scores their hardening,
# then installs, runs, removes and purges the ocore deb, installs, removes and purges the
# ocore-agent deb, and installs, upgrades and erases both rpms (with rpm itself, to run
# their scriptlets), checking what each step must create and keep. Installs the tools it
# needs with apt-get when missing (tests/env/setup.sh installs them for the test suite).
# Safe to run again: it first purges what an interrupted run may have left (the packages,
# the ocore user, /var/lib/ocore and /var/lib/ocore-agent), so do not run it on a host
# whose oCore installation you want to keep. Ends with one line
# `packaging: N passed, M failed` and exits non-zero if anything failed.
set -uo pipefail

# --systemd adds tests/packaging/systemd.sh; every other argument goes to packaging/build.sh.
with_systemd=no
build_args=()
for arg in "$@"; do
    if [ "$arg" = --systemd ]; then with_systemd=yes; else build_args+=("$arg"); fi
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
out=$root/target/packaging/out
started=$SECONDS
# The coordinator's hardening must score at most this in `systemd-analyze security`.
max_coordinator_exposure=3.0

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; }
# check DESCRIPTION COMMAND...: one assertion; the command's output is shown on failure.
check() {
    local what=$1 output
    shift
    if output=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        printf '%s\n' "$output" | sed 's/^/      /'
    fi
}
summary() {
    printf 'took %ss\n' "$((SECONDS - started))"
    printf 'packaging: %d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
}
# Aborts the rest of the run (a later step cannot be meaningful without this one).
abort() {
    fail "$1"
    summary
    exit 1
}
# Each section's header says when it started, to show where the time goes.
section() { printf '\n== %s (at %ss)\n' "$1" "$((SECONDS - started))"; }

# Asserts `stat` of PATH prints MODE OWNER GROUP.
has_mode() {
    local actual
    actual=$(stat -c '%a %U %G' "$1") || return 1
    [ "$actual" = "$2" ] || { echo "$1 is $actual, expected $2"; return 1; }
}
# Asserts that ocore is a system user with home /var/lib/ocore and no login shell.
ocore_is_system_user() {
    local entry uid home shell
    entry=$(getent passwd ocore) || { echo "no user ocore"; return 1; }
    IFS=: read -r _ _ uid _ _ home shell <<<"$entry"
    if [ "$uid" -ge 1000 ] || [ "$home" != /var/lib/ocore ] || [ "${shell##*/}" != nologin ]; then
        echo "$entry"
        return 1
    fi
}
# Runs a command as the ocore user without a login session. setpriv execs the command, so
# `setpriv ... &` makes $! the daemon itself and signals reach it directly.
as_ocore=(setpriv --reuid=ocore --regid=ocore --init-groups --)
as_ocore() { "${as_ocore[@]}" "$@"; }
# Prints the command line of KEY= (ExecStart, ExecStartPre) in a unit file.
unit_command() { sed -n "s/^$2=//p" "$1" | head -n 1; }
# Prints a configuration file with every commented-out key and [section] enabled.
uncomment_all() { sed -e 's/^#\(\[\{1,2\}[a-z_]*\]\{1,2\}\)$/\1/' -e 's/^#\([a-z_]* = \)/\1/' "$1"; }
not_installed() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
# Leftovers of an interrupted run: the packages, and the user if the purge did not get to it.
purge_leftovers() {
    dpkg -P ocore ocore-agent >/dev/null 2>&1 || true
    rpm -e --nodeps --force-debian ocore ocore-agent >/dev/null 2>&1 || true
    if getent passwd ocore >/dev/null && not_installed ocore; then
        userdel ocore 2>/dev/null || true
    fi
    if getent group ocore >/dev/null && not_installed ocore; then groupdel ocore || true; fi
    not_installed ocore && rm -rf /var/lib/ocore
    not_installed ocore-agent && rm -rf /var/lib/ocore-agent
}

[ "$(id -u)" -eq 0 ] || abort "runs as root (it installs packages)"
# One run at a time on a host: runs install and purge the same packages and user.
exec 9>/run/ocore-packaging-check.lock
if ! flock -n 9; then
    echo "waiting for another tests/packaging/check.sh on this host to finish"
    flock 9
fi
scratch=$(mktemp -d /tmp/ocore-packaging.XXXXXX)
# The coordinator runs as ocore from a directory below this one.
chmod 0711 "$scratch"
coordinator_pid=
cleanup() {
    [ -n "$coordinator_pid" ] && kill -KILL "$coordinator_pid" 2>/dev/null
    # The systemd container of tests/packaging/systemd.sh, if it was started.
    [ -n "${systemd_container:-}" ] && docker rm -f "$systemd_container" >/dev/null 2>&1
    rm -rf "$scratch"
}
trap cleanup EXIT

section "tools"
declare -A tool_package=(
    [lintian]=lintian [rpmlint]=rpmlint [rpm]=rpm [rpmbuild]=rpm [systemd-analyze]=systemd
    [dpkg-shlibdeps]=dpkg-dev [strip]=binutils [adduser]=adduser [man]=man-db
    [setpriv]=util-linux [gzip]=gzip [curl]=curl
)
missing=()
for tool in "${!tool_package[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${tool_package[$tool]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        abort "apt-get install ${missing[*]}"
    fi
fi
pass "tools present: ${!tool_package[*]}"

section "build"
build_started=$SECONDS
packaging/build.sh "${build_args[@]}" || abort "packaging/build.sh ${build_args[*]}"
pass "packaging/build.sh ${build_args[*]} built the packages in $((SECONDS - build_started))s"
version=$(cargo pkgid -p ocore | sed 's/.*[#@]//')
deb_ocore=$out/ocore_${version}-1_amd64.deb
deb_agent=$out/ocore-agent_${version}-1_amd64.deb
rpm_ocore=$out/ocore-${version}-1.x86_64.rpm
rpm_agent=$out/ocore-agent-${version}-1.x86_64.rpm
for f in "$deb_ocore" "$deb_agent" "$rpm_ocore" "$rpm_agent"; do
    [ -f "$f" ] || abort "package $f exists"
done
pass "four packages exist"
ls -l "$out"

section "deb contents"
deb_has() { dpkg-deb -c "$1" | awk '{print $1, $2, $6}' | grep -qxF -e "$2" || {
    echo "$1 has no entry '$2':"; dpkg-deb -c "$1"; return 1; }; }
check "ocore deb: binary in /usr/bin" deb_has "$deb_ocore" "-rwxr-xr-x root/root ./usr/bin/ocore"
check "ocore deb: unit in /lib/systemd/system" \
    deb_has "$deb_ocore" "-rw-r--r-- root/root ./lib/systemd/system/ocore.service"
check "ocore deb: config 0640" deb_has "$deb_ocore" "-rw-r----- root/root ./etc/ocore/coordinator.toml"
check "ocore deb: gzipped man page" \
    deb_has "$deb_ocore" "-rw-r--r-- root/root ./usr/share/man/man1/ocore.1.gz"
check "ocore deb: bash completion" \
    deb_has "$deb_ocore" "-rw-r--r-- root/root ./usr/share/bash-completion/completions/ocore"
check "ocore deb: zsh completion" \
    deb_has "$deb_ocore" "-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_ocore"
check "ocore deb: fish completion" \
    deb_has "$deb_ocore" "-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/ocore.fish"
check "ocore deb: copyright" deb_has "$deb_ocore" "-rw-r--r-- root/root ./usr/share/doc/ocore/copyright"
check "ocore deb: depends on adduser (postinst) and procps (the unit's /bin/kill)" \
    sh -c "dpkg-deb -f '$deb_ocore' Depends | grep -q ', adduser, procps$'"
check "ocore-agent deb: depends on procps (the unit's /bin/kill)" \
    sh -c "dpkg-deb -f '$deb_agent' Depends | grep -q ', procps$'"
check "ocore-agent deb: binary in /usr/bin" \
    deb_has "$deb_agent" "-rwxr-xr-x root/root ./usr/bin/ocore-agent"
check "ocore-agent deb: unit in /lib/systemd/system" \
    deb_has "$deb_agent" "-rw-r--r-- root/root ./lib/systemd/system/ocore-agent.service"
check "ocore-agent deb: config 0640" deb_has "$deb_agent" "-rw-r----- root/root ./etc/ocore/agent.toml"
check "ocore-agent deb: copyright" \
    deb_has "$deb_agent" "-rw-r--r-- root/root ./usr/share/doc/ocore-agent/copyright"
check "ocore-agent deb: recommends docker, nginx, postgresql-client, docker-registry" \
    test "$(dpkg-deb -f "$deb_agent" Recommends)" = \
    "docker.io | docker-ce, nginx, postgresql-client, docker-registry"

# deb_script_is DEB SCRIPT FILE: the maintainer script SCRIPT of DEB is FILE.
deb_script_is() { diff <(dpkg-deb --info "$1" "$2") "$3"; }
for pkg in ocore ocore-agent; do
    deb=$deb_ocore
    [ "$pkg" = ocore-agent ] && deb=$deb_agent
    check "$pkg deb: version $version-1, from the workspace" test "$(dpkg-deb -f "$deb" Version)" = "$version-1"
    check "$pkg deb: depends on the libc it was linked against" \
        sh -c "dpkg-deb -f '$deb' Depends | grep -q 'libc6 (>= '"
    for script in postinst prerm postrm; do
        check "$pkg deb: $script is packaging/deb/$pkg/$script" \
            deb_script_is "$deb" "$script" "packaging/deb/$pkg/$script"
    done
done

section "rpm contents"
# rpm --dump: path size mtime digest mode owner group isconfig isdoc ...
rpm_has() { rpm -qp --dump "$1" 2>/dev/null | awk '{printf "%s %s %s %s %s\n", $1, substr($5, length($5)-3), $6, $7, $8}' \
    | grep -qxF -e "$2" || { echo "$1 has no entry '$2':"; rpm -qp --dump "$1"; return 1; }; }
check "ocore rpm: binary in /usr/bin" rpm_has "$rpm_ocore" "/usr/bin/ocore 0755 root root 0"
check "ocore rpm: unit in /usr/lib/systemd/system" \
    rpm_has "$rpm_ocore" "/usr/lib/systemd/system/ocore.service 0644 root root 0"
check "ocore rpm: config 0640 root:ocore, %config(noreplace)" \
    sh -c "rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]' '$rpm_ocore' \
        | grep -qx '/etc/ocore/coordinator.toml -rw-r----- root:ocore cn'"
check "ocore rpm: man page and completions" sh -c "rpm -qlp '$rpm_ocore' | grep -c \
    -e '^/usr/share/man/man1/ocore.1.gz$' -e '^/usr/share/bash-completion/completions/ocore$' \
    -e '^/usr/share/zsh/site-functions/_ocore$' -e '^/usr/share/fish/vendor_completions.d/ocore.fish$' \
    | grep -qx 4"
check "ocore rpm: /var/lib/ocore 0750 ocore:ocore" rpm_has "$rpm_ocore" "/var/lib/ocore 0750 ocore ocore 0"
check "ocore rpm: requires shadow-utils (or SUSE's shadow) and util-linux (scriptlets, /bin/kill)" sh -c \
    "rpm -qp --requires '$rpm_ocore' | grep -qx '(shadow-utils or shadow)' && rpm -qp --requires '$rpm_ocore' | grep -qx util-linux"
# scriptlet_is RPM TAG FILE: the scriptlet TAG (PREIN, POSTIN, PREUN, POSTUN) of RPM is FILE.
scriptlet_is() { diff <(rpm -qp --qf "%{$2}\n" "$1" 2>/dev/null) "$3"; }
for tag_file in PREIN:pre POSTIN:post PREUN:preun POSTUN:postun; do
    check "ocore rpm: ${tag_file%%:*} scriptlet is packaging/rpm/ocore/${tag_file#*:}.sh" \
        scriptlet_is "$rpm_ocore" "${tag_file%%:*}" "packaging/rpm/ocore/${tag_file#*:}.sh"
done
check "ocore-agent rpm: config 0640 root:root, %config(noreplace)" \
    sh -c "rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]' '$rpm_agent' \
        | grep -qx '/etc/ocore/agent.toml -rw-r----- root:root cn'"
check "ocore-agent rpm: requires util-linux (the unit's /bin/kill)" \
    sh -c "rpm -qp --requires '$rpm_agent' | grep -qx util-linux"
check "ocore-agent rpm: binary in /usr/bin" rpm_has "$rpm_agent" "/usr/bin/ocore-agent 0755 root root 0"
check "ocore-agent rpm: unit in /usr/lib/systemd/system" \
    rpm_has "$rpm_agent" "/usr/lib/systemd/system/ocore-agent.service 0644 root root 0"
check "ocore-agent rpm: /var/lib/ocore-agent 0700 root:root" \
    rpm_has "$rpm_agent" "/var/lib/ocore-agent 0700 root root 0"
check "ocore-agent rpm: recommends (docker-ce or moby-engine), nginx, postgresql" sh -c \
    "test \"\$(rpm -qp --recommends '$rpm_agent' | sort | tr '\n' ,)\" = '(docker-ce or moby-engine),nginx,postgresql,'"
for tag_file in POSTIN:post PREUN:preun POSTUN:postun; do
    check "ocore-agent rpm: ${tag_file%%:*} scriptlet is packaging/rpm/ocore-agent/${tag_file#*:}.sh" \
        scriptlet_is "$rpm_agent" "${tag_file%%:*}" "packaging/rpm/ocore-agent/${tag_file#*:}.sh"
done
check "ocore-agent rpm: no pre-install scriptlet" test "$(rpm -qp --qf '%{PREIN}' "$rpm_agent" 2>/dev/null)" = "(none)"

section "lintian"
# Warnings fail too: each one kept is overridden, with its reason, in
# packaging/lintian-overrides (shipped in /usr/share/lintian/overrides). Overridden tags are
# listed with "O:".
# (--fail-on counts shown overrides, so the verdict comes from the E:/W: lines.)
lint_output=$(lintian --fail-on none --show-overrides --tag-display-limit 0 \
    "$deb_ocore" "$deb_agent" 2>&1)
lint_status=$?
printf '%s\n' "$lint_output" | sed 's/^/      /'
if [ "$lint_status" -eq 0 ] && ! printf '%s\n' "$lint_output" | grep -q '^[EW]: '; then
    pass "lintian: no error or warning in the debs"
else
    fail "lintian: no error or warning in the debs (exit $lint_status)"
fi

section "rpmlint"
# Each filtered message has its reason in packaging/rpmlintrc.
lint_output=$(rpmlint --rpmlintrc packaging/rpmlintrc "$rpm_ocore" "$rpm_agent" 2>&1)
lint_status=$?
printf '%s\n' "$lint_output" | sed 's/^/      /'
if [ "$lint_status" -eq 0 ]; then pass "rpmlint: no error in the rpms"
else fail "rpmlint: no error in the rpms (exit $lint_status)"; fi

section "systemd units: what the issue asks of them"
# unit_has UNIT LINE...: UNIT has each LINE, exactly.
unit_has() {
    local unit=$1 line absent=0
    shift
    for line in "$@"; do
        grep -qxF -e "$line" "$unit" || { echo "$unit has no line '$line'"; absent=1; }
    done
    return "$absent"
}
for unit in systemd/ocore.service systemd/ocore-agent.service; do
    # shellcheck disable=SC2016 # $MAINPID is the unit's, not ours
    check "$unit: notifies readiness, restarts on failure, reloads on SIGHUP" unit_has "$unit" \
        Type=notify NotifyAccess=main Restart=on-failure 'ExecReload=/bin/kill -HUP $MAINPID'
done
check "systemd/ocore.service: dedicated user, strict file system, no privileges" \
    unit_has systemd/ocore.service User=ocore Group=ocore ProtectSystem=strict PrivateTmp=yes \
    NoNewPrivileges=yes CapabilityBoundingSet= AmbientCapabilities= StateDirectory=ocore
check "systemd/ocore-agent.service: capability bounding, private /tmp, no new privileges" \
    unit_has systemd/ocore-agent.service NoNewPrivileges=yes PrivateTmp=yes StateDirectory=ocore-agent \
    'CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_KILL'

section "systemd units: hardening"
exposure() {
    systemd-analyze security --offline=true --no-pager "$1" 2>/dev/null \
        | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
coordinator_exposure=$(exposure systemd/ocore.service)
agent_exposure=$(exposure systemd/ocore-agent.service)
echo "exposure: ocore.service ${coordinator_exposure:-?}, ocore-agent.service ${agent_exposure:-?}"
check "ocore.service exposure ${coordinator_exposure:-?} <= $max_coordinator_exposure" \
    awk -v e="$coordinator_exposure" -v max="$max_coordinator_exposure" 'BEGIN { exit !(e != "" && e <= max) }'
check "ocore-agent.service exposure ${agent_exposure:-?} is scored" test -n "$agent_exposure"

section "ocore deb: install"
purge_leftovers
check "no earlier ocore install is left" not_installed ocore
check "no earlier ocore user is left" sh -c '! getent passwd ocore'
check "dpkg -i ocore" dpkg -i "$deb_ocore"
not_installed ocore && abort "ocore is installed"
check "user ocore is a system user with home /var/lib/ocore and no login shell" ocore_is_system_user
check "group ocore exists" getent group ocore
check "/etc/ocore/coordinator.toml is 0640 root:ocore" has_mode /etc/ocore/coordinator.toml "640 root ocore"
check "/etc/ocore/coordinator.toml is a conffile" \
    sh -c "dpkg-query -W -f='\${Conffiles}' ocore | grep -q ' /etc/ocore/coordinator.toml '"
check "/var/lib/ocore is 0750 ocore:ocore" has_mode /var/lib/ocore "750 ocore ocore"
check "postinst created the CA: ca.key 0600 ocore" has_mode /var/lib/ocore/ca/ca.key "600 ocore ocore"
check "man page installed" test -f /usr/share/man/man1/ocore.1.gz
check "ocore.service is neither enabled nor started" \
    test ! -e /etc/systemd/system/multi-user.target.wants/ocore.service
check "the packaged configuration validates" \
    as_ocore /usr/bin/ocore server --config /etc/ocore/coordinator.toml --check-config
# The server loads the [tls] files; the CA's own certificate and key stand in for them.
uncomment_all /etc/ocore/coordinator.toml | sed \
    -e 's|^cert = .*|cert = "/var/lib/ocore/ca/ca.crt"|' -e 's|^key = .*|key = "/var/lib/ocore/ca/ca.key"|' \
    >"$scratch/coordinator-all.toml"
check "every example key in coordinator.toml is valid once uncommented" \
    /usr/bin/ocore server --config "$scratch/coordinator-all.toml" --check-config
fingerprint=$(as_ocore /usr/bin/ocore ca show --config /etc/ocore/coordinator.toml 2>/dev/null \
    | sed -n 's/^CA fingerprint (sha256): //p')
check "ocore ca show works as ocore" test -n "$fingerprint"
check "dpkg -i ocore again (upgrade path)" dpkg -i "$deb_ocore"
check "reinstall keeps the CA" test "$(as_ocore /usr/bin/ocore ca show \
    --config /etc/ocore/coordinator.toml 2>/dev/null | sed -n 's/^CA fingerprint (sha256): //p')" = "$fingerprint"
check "systemd-analyze verify ocore.service" \
    systemd-analyze verify --man=yes /lib/systemd/system/ocore.service

section "ocore: run as the unit does"
tmp=$scratch/run
mkdir "$tmp"
# The packaged configuration with only `listen` changed, so this run cannot clash with a port.
chown root:ocore "$tmp"
chmod 0750 "$tmp"
sed 's/^listen = .*/listen = "127.0.0.1:0"/' /etc/ocore/coordinator.toml >"$tmp/coordinator.toml"
chown root:ocore "$tmp/coordinator.toml"
chmod 0640 "$tmp/coordinator.toml"
unit=/lib/systemd/system/ocore.service
pre=$(unit_command "$unit" ExecStartPre | sed "s|/etc/ocore/coordinator.toml|$tmp/coordinator.toml|")
start=$(unit_command "$unit" ExecStart | sed "s|/etc/ocore/coordinator.toml|$tmp/coordinator.toml|")
echo "ExecStartPre: $pre"
echo "ExecStart:    $start"
# shellcheck disable=SC2086 # the unit's command lines are split into words, as systemd does
check "ExecStartPre (check-config) succeeds as ocore" as_ocore $pre
# shellcheck disable=SC2086
"${as_ocore[@]}" $start >"$tmp/server.log" 2>&1 &
coordinator_pid=$!
deadline=$((SECONDS + 30))
until grep -qs "REST API listening on" "$tmp/server.log" || [ $SECONDS -ge $deadline ] \
    || ! kill -0 "$coordinator_pid" 2>/dev/null; do
    sleep 0.2
done
check "coordinator logs 'REST API listening on'" grep -q "REST API listening on" "$tmp/server.log"
check "coordinator runs as ocore" test "$(ps -o user= -p "$coordinator_pid" 2>/dev/null)" = ocore
address=$(sed -n 's|.*REST API listening on http://\([0-9.:]*\).*|\1|p' "$tmp/server.log" | head -n 1)
check "coordinator answers HTTP on $address" \
    curl -sS -o /dev/null --max-time 5 "http://$address/"
check "first admin token written 0600 ocore" has_mode /var/lib/ocore/initial-admin-token "600 ocore ocore"
kill -TERM "$coordinator_pid" 2>/dev/null
status=0
deadline=$((SECONDS + 25))
while kill -0 "$coordinator_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
if kill -0 "$coordinator_pid" 2>/dev/null; then
    status=timeout
else
    wait "$coordinator_pid"
    status=$?
fi
coordinator_pid=
check "coordinator exits 0 within the grace period after SIGTERM" test "$status" = 0
sed 's/^/      /' "$tmp/server.log"

section "ocore deb: remove and purge"
check "dpkg -r ocore" dpkg -r ocore
check "remove keeps /var/lib/ocore (store, CA, token)" \
    test -d /var/lib/ocore/store -a -f /var/lib/ocore/ca/ca.key -a -f /var/lib/ocore/initial-admin-token
check "remove keeps the ocore user" getent passwd ocore
check "remove keeps the conffile" test -f /etc/ocore/coordinator.toml
check "remove deletes the binary" test ! -e /usr/bin/ocore
check "dpkg -P ocore" dpkg -P ocore
check "purge deletes /var/lib/ocore" test ! -e /var/lib/ocore
check "purge deletes the ocore user and group" sh -c '! getent passwd ocore && ! getent group ocore'
check "purge deletes the conffile" test ! -e /etc/ocore/coordinator.toml

section "ocore-agent deb: install, remove, purge"
check "dpkg -i ocore-agent" dpkg -i "$deb_agent"
not_installed ocore-agent && abort "ocore-agent is installed"
check "/etc/ocore/agent.toml is 0640 root:root" has_mode /etc/ocore/agent.toml "640 root root"
check "/etc/ocore/agent.toml is a conffile" \
    sh -c "dpkg-query -W -f='\${Conffiles}' ocore-agent | grep -q ' /etc/ocore/agent.toml '"
check "/var/lib/ocore-agent is 0700 root:root" has_mode /var/lib/ocore-agent "700 root root"
check "ocore-agent.service is neither enabled nor started" \
    test ! -e /etc/systemd/system/multi-user.target.wants/ocore-agent.service
check "systemd-analyze verify ocore-agent.service" \
    systemd-analyze verify --man=yes /lib/systemd/system/ocore-agent.service
uncomment_all /etc/ocore/agent.toml >"$scratch/agent-all.toml"
# check-config exits 64 here because the agent is not enrolled; "valid" is about the file.
check "every example key in agent.toml is valid once uncommented" sh -c \
    "/usr/bin/ocore-agent check-config --config '$scratch/agent-all.toml' 2>&1 | grep -qx '$scratch/agent-all.toml: valid' \
     || /usr/bin/ocore-agent check-config --config '$scratch/agent-all.toml'"
agent_pre=$(unit_command /lib/systemd/system/ocore-agent.service ExecStartPre)
# shellcheck disable=SC2086
$agent_pre >"$tmp/agent-check.log" 2>&1
agent_pre_status=$?
check "ExecStartPre (check-config) refuses to start before enrolment (exit 64)" \
    test "$agent_pre_status" -eq 64
check "... and says why" grep -q "not enrolled" "$tmp/agent-check.log"
mkdir -p /var/lib/ocore-agent/tls
touch /var/lib/ocore-agent/tls/marker
check "dpkg -r ocore-agent" dpkg -r ocore-agent
check "remove keeps /var/lib/ocore-agent" test -f /var/lib/ocore-agent/tls/marker
check "remove keeps the conffile" test -f /etc/ocore/agent.toml
# A file of the operator's beside the configuration (e.g. a PostgreSQL password file).
operator_file=/etc/ocore/check-sh-operator-file
echo secret >"$operator_file"
check "dpkg -P ocore-agent" dpkg -P ocore-agent
check "purge deletes /var/lib/ocore-agent" test ! -e /var/lib/ocore-agent
check "purge deletes the conffile" test ! -e /etc/ocore/agent.toml
check "purge keeps what the package did not install ($operator_file)" test -f "$operator_file"
rm -f "$operator_file"

section "rpms: scriptlets, with rpm itself (--nodeps: this host is not an rpm distribution)"
rpm_flags=(--nodeps)
rpm --help 2>&1 | grep -q -- --force-debian && rpm_flags+=(--force-debian)
check "rpm -i ocore" rpm -i "${rpm_flags[@]}" "$rpm_ocore"
check "%pre created the system user ocore" ocore_is_system_user
check "/etc/ocore/coordinator.toml is 0640 root:ocore" has_mode /etc/ocore/coordinator.toml "640 root ocore"
check "/var/lib/ocore is 0750 ocore:ocore" has_mode /var/lib/ocore "750 ocore ocore"
check "%post created the CA: ca.key 0600 ocore" has_mode /var/lib/ocore/ca/ca.key "600 ocore ocore"
check "ocore.service is neither enabled nor started" \
    test ! -e /etc/systemd/system/multi-user.target.wants/ocore.service
fingerprint=$(as_ocore /usr/bin/ocore ca show --config /etc/ocore/coordinator.toml 2>/dev/null \
    | sed -n 's/^CA fingerprint (sha256): //p')
check "ocore ca show works as ocore" test -n "$fingerprint"
check "rpm -U ocore (upgrade path)" rpm -U --replacepkgs "${rpm_flags[@]}" "$rpm_ocore"
check "upgrade keeps the CA" test "$(as_ocore /usr/bin/ocore ca show \
    --config /etc/ocore/coordinator.toml 2>/dev/null | sed -n 's/^CA fingerprint (sha256): //p')" = "$fingerprint"
check "rpm -e ocore" rpm -e "${rpm_flags[@]}" ocore
check "erase keeps /var/lib/ocore and the ocore user" \
    sh -c 'test -f /var/lib/ocore/ca/ca.key && getent passwd ocore >/dev/null'
check "erase deletes the binary" test ! -e /usr/bin/ocore
check "rpm -i ocore-agent" rpm -i "${rpm_flags[@]}" "$rpm_agent"
check "/etc/ocore/agent.toml is 0640 root:root" has_mode /etc/ocore/agent.toml "640 root root"
check "/var/lib/ocore-agent is 0700 root:root" has_mode /var/lib/ocore-agent "700 root root"
check "ocore-agent.service is neither enabled nor started" \
    test ! -e /etc/systemd/system/multi-user.target.wants/ocore-agent.service
mkdir -p /var/lib/ocore-agent/tls
touch /var/lib/ocore-agent/tls/marker
check "rpm -e ocore-agent" rpm -e "${rpm_flags[@]}" ocore-agent
check "erase keeps what is in /var/lib/ocore-agent" test -f /var/lib/ocore-agent/tls/marker
check "erase deletes the agent's binary" test ! -e /usr/bin/ocore-agent
# What an operator does by hand after erasing, since rpm has no purge.
userdel ocore 2>/dev/null
getent group ocore >/dev/null && groupdel ocore
rm -rf /var/lib/ocore /var/lib/ocore-agent
rmdir /etc/ocore 2>/dev/null

# The units under a real systemd, in a container (this host's PID 1 is not systemd).
if [ "$with_systemd" = yes ]; then
    # shellcheck source=tests/packaging/systemd.sh
    . "$root/tests/packaging/systemd.sh"
else
    printf '\n(not run: the units under a real systemd; add --systemd)\n'
fi

section "summary"
summary
