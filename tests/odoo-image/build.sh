#!/usr/bin/env bash
# Builds the oCore Odoo test image (default tag ocore/odoo-test:17.0) FROM scratch:
# Debian's static busybox, the `odoo` stand-in built as a static binary, odoo.conf, the odoo
# user (uid/gid 101) and a pip stand-in. Idempotent: an unchanged tree rebuilds from cache.
#
#   tests/odoo-image/build.sh [TAG]
#
# The stand-in is built as the workspace member `ocore-odoo-standin`; OCORE_WORKSPACE_MANIFEST
# may name another workspace's Cargo.toml that has it as a member.
set -euo pipefail

tag="${1:-ocore/odoo-test:17.0}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
manifest="${OCORE_WORKSPACE_MANIFEST:-$repo/Cargo.toml}"

say() { printf '[odoo-image] %s\n' "$*"; }
fail() { printf '[odoo-image] error: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers; start dockerd first"

# 1. The stand-in, linked statically against glibc so it runs in an empty image.
if ! cargo metadata --manifest-path "$manifest" --format-version 1 --no-deps 2>/dev/null \
    | grep -q '"name":"ocore-odoo-standin"'; then
    fail "ocore-odoo-standin is not a member of the workspace $manifest; add \"tests/odoo-standin\" to [workspace] members"
fi
# The dev profile: it reuses the dependencies the test build already compiled (a release
# build would compile them all again, with LTO, for a binary that only answers tests).
say "building the odoo stand-in (static)"
cargo rustc --manifest-path "$manifest" -p ocore-odoo-standin --bin odoo --quiet \
    -- -C target-feature=+crt-static -C strip=symbols
target_dir="$(cargo metadata --manifest-path "$manifest" --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
binary="$target_dir/debug/odoo"
[ -x "$binary" ] || fail "built binary not found at $binary"
if ! file "$binary" | grep -q 'static'; then
    fail "$binary is not statically linked: $(file -b "$binary")"
fi
say "stand-in: $binary ($(file -b "$binary" | cut -d, -f1,4 ), $(du -h "$binary" | cut -f1))"

# 2. Debian's static busybox.
busybox=/bin/busybox
if ! { [ -x "$busybox" ] && file -L "$busybox" | grep -q 'static'; }; then
    say "installing busybox-static"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
file -L "$busybox" | grep -q 'static' || fail "$busybox is not a static busybox"

# 3. The build context.
context="$(mktemp -d /tmp/ocore-odoo-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs"/{bin,usr/bin,usr/local/bin,etc/odoo,mnt,var/lib,root,tmp} \
    "$rootfs/usr/local/lib/python3.12/dist-packages" "$rootfs/usr/lib/python3.12" \
    "$context/owned/extra-addons" "$context/owned/odoo-data"
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"
cp -a "$here/rootfs/." "$rootfs/"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
# Every applet as a symlink in /bin, like `busybox --install -s`.
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
ln -sf /bin/busybox "$rootfs/usr/bin/env"
install -m 0755 "$binary" "$rootfs/usr/bin/odoo"
# The stand-in is also the official image's wait-for-psql.py (it looks at its name).
ln -sf /usr/bin/odoo "$rootfs/usr/local/bin/wait-for-psql.py"
chmod 0755 "$rootfs/usr/local/bin/pip" "$rootfs/entrypoint.sh"
ln -sf pip "$rootfs/usr/local/bin/pip3"
# PEP 668: Debian's and Ubuntu's system Python is externally managed (pip refuses to install
# into it unless told to break system packages).
cat > "$rootfs/usr/lib/python3.12/EXTERNALLY-MANAGED" <<'MARKER'
[externally-managed]
Error=To install Python packages system-wide, try apt install
 python3-xyz, where xyz is the package you are trying to
 install.
MARKER
install -m 0644 "$here/odoo.conf" "$context/owned/odoo.conf"
cp "$here/Dockerfile" "$context/Dockerfile"

# 4. The image, with the classic builder (it builds FROM scratch without pulling anything).
say "building $tag"
previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
if ! DOCKER_BUILDKIT=0 docker build --tag "$tag" "$context" >"$context.log" 2>&1; then
    cat "$context.log" >&2
    rm -f "$context.log"
    fail "docker build failed"
fi
rm -f "$context.log"
id="$(docker image inspect --format '{{.Id}}' "$tag")"
# The image this tag pointed to before is dangling now; remove it unless a container uses it.
if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
size="$(docker image inspect --format '{{.Size}}' "$tag")"
say "built $tag ($id, $((size / 1024)) KiB)"
