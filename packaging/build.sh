#!/usr/bin/env bash
# Builds the oCore packages: ocore and ocore-agent, each as .deb and .rpm.
#
#   packaging/build.sh
#
# Installs cargo-deb and cargo-generate-rpm (cargo install --locked) when they are missing,
# builds the release binaries, generates the shell completions and the man page of `ocore`
# from the release binary, and writes the four packages to target/packaging/out/. The
# version is the workspace's (`[workspace.package] version`), with package revision 1.
# Needs: a Rust toolchain, strip (binutils), gzip, and dpkg-shlibdeps (dpkg-dev) for the
# deb dependencies.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
release_dir=${CARGO_TARGET_DIR:-$root/target}/release
work=$root/target/packaging
out=$work/out

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Tools, installed only when missing.
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    log "installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
    cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
fi

version=$(cargo pkgid -p ocore | sed 's/.*[#@]//')
agent_version=$(cargo pkgid -p ocore-agent | sed 's/.*[#@]//')
if [ "$version" != "$agent_version" ]; then
    log "ocore is $version but ocore-agent is $agent_version; both take the workspace version"
    exit 1
fi
log "version $version"

log "building release binaries"
cargo build --release --locked -p ocore -p ocore-agent

rm -rf "$work/ocore" "$work/ocore-agent" "$out"
mkdir -p "$work/ocore" "$work/ocore-agent" "$out"

# Stripped copies for the rpms (cargo-deb strips its own copy of target/release/*).
for bin in ocore ocore-agent; do
    install -m 0755 "$release_dir/$bin" "$work/$bin/$bin"
    strip --strip-all "$work/$bin/$bin"
done

# Completions and the man page come from the binary's own command definitions.
ocore=$work/ocore/ocore
"$ocore" completions bash >"$work/ocore/ocore.bash"
"$ocore" completions zsh >"$work/ocore/_ocore"
"$ocore" completions fish >"$work/ocore/ocore.fish"
"$ocore" manpage | gzip -9n >"$work/ocore/ocore.1.gz"

# A Debian changelog for this version, dated by the last commit so rebuilds are identical.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
for pkg in ocore ocore-agent; do
    cat >"$work/$pkg/changelog" <<EOF
$pkg ($version-1) unstable; urgency=medium

  * Package of oCore $version, built from the oCore workspace.

 -- oCore engineers <ocore@example.invalid>  $(LC_ALL=C date -u -R -d "@$epoch")
EOF
done

# cargo-deb warns that the ../target/packaging/ assets "will not be built": they are not
# Cargo outputs but the files generated above, so the warning is expected.
log "building debs"
cargo deb --no-build -p ocore -o "$out/"
cargo deb --no-build -p ocore-agent -o "$out/"

log "building rpms"
cargo generate-rpm -p coordinator -o "$out/"
cargo generate-rpm -p agent -o "$out/"

log "packages in $out:"
ls -l "$out" >&2
