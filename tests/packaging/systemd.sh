# shellcheck shell=bash
# The debs under a real systemd: sourced by tests/packaging/check.sh (its helpers and
# counters), after the packages are built and checked on this host.
# shellcheck disable=SC2154 # scratch, out, deb_ocore, deb_agent, ... are check.sh's
#
# This host's PID 1 is not systemd, so the units are started in a container whose PID 1 is
# systemd: a Debian 12 root file system made by mmdebstrap (a faster debootstrap) from this
# host's own apt mirror, imported once as the Docker image $systemd_image (kept for later
# runs, like the Odoo test image). The container has no network; it gets the built packages read-only
# and this host's Docker Engine socket, which the agent needs to start (it drives Docker).
# In it: install, start (Type=notify: `systemctl start` returns once the daemon says it
# listens), reload (SIGHUP), restart on failure, restart on upgrade, stop on removal, and
# the journal, for the coordinator; for the agent, the refusal to start before enrolment,
# then enrolment with that coordinator, start, a call over mutual TLS, and reload.
# `systemd-analyze security` scores both running units.

systemd_image=ocore/systemd-test:bookworm
systemd_container=ocore-packaging-systemd-$$

# Prints the first Debian archive this host's apt uses.
host_debian_mirror() {
    {
        sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null
        sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null
    } | grep -v -e security -e '^$' | head -n 1
}

# Builds $systemd_image, unless it exists: Debian 12's essential packages with systemd and
# what the debs depend on beyond them (adduser, procps), by mmdebstrap, straight into
# `docker import`. So `dpkg -i` there fails if a dependency is missing from the packages.
build_systemd_image() {
    docker image inspect "$systemd_image" >/dev/null 2>&1 && return 0
    local mirror masks
    mirror=$(host_debian_mirror)
    [ -n "$mirror" ] || { echo "no Debian mirror in this host's apt sources"; return 1; }
    if ! command -v mmdebstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null || return 1
    fi
    # Nothing in the container needs a console, udev, the network or apt's timers. (The
    # hook is a shell command of mmdebstrap's; $1 is the root file system.)
    masks='for unit in getty.target console-getty.service systemd-udevd.service'
    masks+=' systemd-udev-trigger.service systemd-networkd.service systemd-resolved.service'
    masks+=' systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do'
    # shellcheck disable=SC2016
    masks+=' ln -sf /dev/null "$1/etc/systemd/system/$unit"; done'
    echo "mmdebstrap bookworm from $mirror"
    mmdebstrap --variant=essential --include=systemd,systemd-sysv,adduser,procps \
        --customize-hook="$masks" bookworm - "$mirror" 2>"$scratch/mmdebstrap.log" \
        | docker import --change 'ENTRYPOINT ["/lib/systemd/systemd"]' \
            --change 'ENV container=docker' - "$systemd_image" >/dev/null
    local status=("${PIPESTATUS[@]}")
    if [ "${status[0]}" -ne 0 ] || [ "${status[1]}" -ne 0 ]; then
        tail -n 30 "$scratch/mmdebstrap.log"
        docker image rm "$systemd_image" >/dev/null 2>&1
        return 1
    fi
}

in_box() { docker exec "$systemd_container" "$@"; }
# Waits until systemd in the container has booted (running, or degraded).
box_booted() {
    local state deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        state=$(in_box systemctl is-system-running 2>/dev/null)
        case $state in running | degraded) return 0 ;; esac
        sleep 0.5
    done
    echo "systemd state: ${state:-?}"
    in_box systemctl --failed --no-pager
    return 1
}
main_pid() { in_box systemctl show -P MainPID "$1"; }
is_active() { test "$(in_box systemctl is-active "$1")" = active; }
# Waits (up to 30 s) until UNIT is active with a main PID other than OLD_PID.
restarted() {
    local unit=$1 old=$2 deadline=$((SECONDS + 30)) pid
    while [ $SECONDS -lt $deadline ]; do
        pid=$(main_pid "$unit")
        if [ -n "$pid" ] && [ "$pid" != 0 ] && [ "$pid" != "$old" ] && is_active "$unit"; then
            return 0
        fi
        sleep 0.5
    done
    in_box systemctl status --no-pager "$unit"
    return 1
}
# journal_has UNIT TEXT: polls (up to 10 s) for TEXT in UNIT's journal.
journal_has() {
    local deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ]; do
        in_box journalctl -u "$1" --no-pager -o cat 2>/dev/null | grep -qF -- "$2" && return 0
        sleep 0.5
    done
    in_box journalctl -u "$1" --no-pager -o cat | tail -n 20
    return 1
}
box_exposure() {
    in_box systemd-analyze security --no-pager "$1" 2>/dev/null \
        | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}

section "systemd: image"
image_started=$SECONDS
build_systemd_image || abort "image $systemd_image (Debian 12 with systemd, by mmdebstrap)"
pass "image $systemd_image ready in $((SECONDS - image_started))s"

section "systemd: boot a container with systemd as PID 1"
# systemd must mount, and set up the namespaces, capability sets and system call filters
# the units ask for: the container gets the capabilities this host has (--privileged asks
# for all of them, which a host without CAP_SYS_RESOURCE, like CI's, cannot grant) and no
# seccomp or AppArmor profile of Docker's.
# Capability names in bit order (capability.h), to add those this host's bounding set has.
box_caps=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)
box_bounding=$((16#$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)))
box_cap_args=()
for bit in "${!box_caps[@]}"; do
    if (( (box_bounding >> bit) & 1 )); then box_cap_args+=(--cap-add "${box_caps[$bit]}"); fi
done
docker run -d --name "$systemd_container" "${box_cap_args[@]}" \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined --network none \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    -v "$out:/packages:ro" -v /var/run/docker.sock:/run/docker.sock "$systemd_image" >/dev/null \
    || abort "docker run $systemd_image"
systemd_cleanup() { docker rm -f "$systemd_container" >/dev/null 2>&1; }
check "systemd booted in the container" box_booted
test "$(in_box cat /proc/1/comm)" = systemd || abort "PID 1 in the container is systemd"
pass "PID 1 in the container is systemd ($(in_box systemctl --version | head -n 1))"

section "systemd: ocore.service"
deb=/packages/${deb_ocore##*/}
check "dpkg -i ocore" in_box dpkg -i "$deb"
check "installing enabled nothing" test "$(in_box systemctl is-enabled ocore.service)" = disabled
check "installing started nothing" test "$(in_box systemctl is-active ocore.service)" = inactive
check "systemctl start ocore" in_box systemctl start ocore.service
# Type=notify: start returned after READY=1, so the port must answer right away.
check "the REST API accepts connections as soon as start returns (ready means listening)" \
    in_box bash -c 'exec 3<>/dev/tcp/127.0.0.1/8800'
pid=$(main_pid ocore.service)
check "the coordinator runs as ocore" test "$(in_box stat -c %U "/proc/$pid")" = ocore
check "journalctl -u ocore shows it listening" journal_has ocore.service "REST API listening on"
check "systemctl reload ocore" in_box systemctl reload ocore.service
check "journalctl -u ocore shows the reload" \
    journal_has ocore.service "SIGHUP: reloaded the CA and the coordinator certificate"
check "reload kept the same process" test "$(main_pid ocore.service)" = "$pid"
coordinator_live_exposure=$(box_exposure ocore.service)
echo "systemd-analyze security ocore.service (running): ${coordinator_live_exposure:-?}"
check "running ocore.service exposure ${coordinator_live_exposure:-?} <= $max_coordinator_exposure" \
    awk -v e="$coordinator_live_exposure" -v max="$max_coordinator_exposure" 'BEGIN { exit !(e != "" && e <= max) }'
in_box systemctl kill --kill-whom=main --signal=KILL ocore.service
check "Restart=on-failure restarts a killed coordinator" restarted ocore.service "$pid"
pid=$(main_pid ocore.service)
check "dpkg -i ocore again (upgrade)" in_box dpkg -i "$deb"
check "the upgrade restarted the running coordinator" restarted ocore.service "$pid"
token=$(in_box cat /var/lib/ocore/initial-admin-token)

section "systemd: ocore-agent.service"
check "dpkg -i ocore-agent" in_box dpkg -i "/packages/${deb_agent##*/}"
check "installing enabled nothing" test "$(in_box systemctl is-enabled ocore-agent.service)" = disabled
check "systemctl start ocore-agent fails before enrolment" sh -c \
    "! docker exec '$systemd_container' systemctl start ocore-agent.service"
check "journalctl -u ocore-agent says why" journal_has ocore-agent.service "not enrolled"
check "and it is not restarted in a loop (exit 64)" \
    test "$(in_box systemctl show -P NRestarts ocore-agent.service)" = 0
enrol=$(in_box env OCORE_URL=http://127.0.0.1:8800 OCORE_TOKEN="$token" \
    ocore agent add box1 --address 127.0.0.1:7700 2>&1)
enrol_token=$(printf '%s\n' "$enrol" | grep -o 'ocore-enrol-[^ ]*' | head -n 1)
check "ocore agent add prints an enrolment token" test -n "$enrol_token"
check "ocore-agent enroll" in_box ocore-agent enroll --config /etc/ocore/agent.toml \
    --coordinator http://127.0.0.1:8800 --token "$enrol_token"
check "systemctl start ocore-agent" in_box systemctl start ocore-agent.service
check "journalctl -u ocore-agent shows it listening" journal_has ocore-agent.service "listening on"
check "the coordinator reaches the agent over mutual TLS" in_box env \
    OCORE_URL=http://127.0.0.1:8800 OCORE_TOKEN="$token" ocore agent ping box1
check "systemctl reload ocore-agent" in_box systemctl reload ocore-agent.service
check "journalctl -u ocore-agent shows the reload" journal_has ocore-agent.service "SIGHUP: reloaded certificate"
agent_live_exposure=$(box_exposure ocore-agent.service)
echo "systemd-analyze security ocore-agent.service (running): ${agent_live_exposure:-?}"
check "running ocore-agent.service exposure ${agent_live_exposure:-?} is scored" test -n "$agent_live_exposure"

section "systemd: removal"
check "dpkg -r ocore-agent" in_box dpkg -r ocore-agent
check "removing ocore-agent stopped it" test "$(in_box systemctl is-active ocore-agent.service)" != active
check "dpkg -r ocore" in_box dpkg -r ocore
check "removing ocore stopped it" test "$(in_box systemctl is-active ocore.service)" != active
check "removal keeps /var/lib/ocore and /var/lib/ocore-agent" \
    in_box test -f /var/lib/ocore/ca/ca.key -a -d /var/lib/ocore-agent/tls
check "no unit failed" sh -c "test -z \"\$(docker exec '$systemd_container' systemctl list-units --failed --plain --no-legend)\" \
    || docker exec '$systemd_container' systemctl list-units --failed --no-pager"
systemd_cleanup
