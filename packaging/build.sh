#!/usr/bin/env bash
# Builds the oCore packages: ocore and ocore-agent, each as .deb and .rpm.
#
#   packaging/build.sh                  release binaries (what is published)
#   packaging/build.sh --profile dev    the debug binaries `cargo build --workspace --bins`
#                                       makes, compressed fast: what the test suite
#                                       packages and checks, to spare a release build
#
# Builds the binaries with that Cargo profile, strips copies of them, generates the shell
# completions and the man page of `ocore` from the binary, lays out each package's files
# (stage(), below: the one list of what each package contains), then builds the debs with
# dpkg-deb (control files and maintainer scripts in packaging/deb/) and the rpms with
# rpmbuild (spec files and scriptlets in packaging/rpm/). The profile changes only which
# binaries go in and how hard the packages are compressed; every other file, script and
# field in them is the same. The packages are written to target/packaging/out/. The
# version is the workspace's (`[workspace.package] version`), with package revision 1.
# Needs: a Rust toolchain, dpkg-deb and dpkg-shlibdeps (dpkg-dev), rpmbuild (rpm),
# strip (binutils) and gzip.
set -euo pipefail
umask 022

profile=release
while [ $# -gt 0 ]; do
    case $1 in
    --profile) profile=${2:?--profile needs a Cargo profile name}; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    *) profile=usage; break ;;
    esac
done
case $profile in
release | dev) ;;
*) echo "usage: packaging/build.sh [--profile release|dev]" >&2; exit 64 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# Cargo names the output directory of the dev profile "debug".
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
bins=${CARGO_TARGET_DIR:-$root/target}/$profile_dir
work=$root/target/packaging
out=$work/out

log() { printf 'build.sh: %s\n' "$*" >&2; }

for tool in dpkg-deb dpkg-shlibdeps rpmbuild strip gzip; do
    command -v "$tool" >/dev/null || { log "needs $tool (see the header of this script)"; exit 1; }
done

version=$(cargo pkgid -p ocore | sed 's/.*[#@]//')
agent_version=$(cargo pkgid -p ocore-agent | sed 's/.*[#@]//')
if [ "$version" != "$agent_version" ]; then
    log "ocore is $version but ocore-agent is $agent_version; both take the workspace version"
    exit 1
fi
deb_arch=$(dpkg --print-architecture)
log "version $version, $profile binaries, $deb_arch"

if [ "$profile" = release ]; then
    deb_compression=(-Zxz -z6)
    rpm_payload=w6.xzdio
else
    # The test suite's packages are thrown away: xz would take a minute of CPU on them.
    deb_compression=(-Zgzip -z1)
    rpm_payload=w1.gzdio
fi

log "building the $profile binaries"
if [ "$profile" = dev ]; then
    # What tests/run.sh builds, so that its binaries are packaged as they are: building only
    # these two packages would unify features differently and recompile some crates.
    cargo build --locked --workspace --bins
else
    cargo build --locked --profile "$profile" -p ocore -p ocore-agent
fi

rm -rf "$work/gen" "$work/deb" "$work/rpm" "$out"
mkdir -p "$work/gen" "$out"
gen=$work/gen

# Stripped copies: the packages carry no debug information.
for bin in ocore ocore-agent; do
    install -m 0755 "$bins/$bin" "$gen/$bin"
    strip --strip-all "$gen/$bin"
done

# Completions and the man page come from the binary's own command definitions.
"$gen/ocore" completions bash >"$gen/ocore.bash"
"$gen/ocore" completions zsh >"$gen/_ocore"
"$gen/ocore" completions fish >"$gen/ocore.fish"
"$gen/ocore" manpage | gzip -9n >"$gen/ocore.1.gz"

# Dated by the last commit, so that rebuilds of one commit are identical.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch

# stage PACKAGE FORMAT DIR: lays out the files of PACKAGE (ocore, ocore-agent) as FORMAT
# (deb, rpm) installs them, below DIR. The rpm spec's %files gives each file's owner and
# flags; rpmbuild fails if a staged file is not listed there or a listed one is missing.
stage() {
    local pkg=$1 format=$2 dir=$3 unit_dir zsh_dir
    if [ "$format" = deb ]; then
        # Where debhelper puts them on Debian 12 and Ubuntu.
        unit_dir=lib/systemd/system
        zsh_dir=usr/share/zsh/vendor-completions
    else
        unit_dir=usr/lib/systemd/system
        zsh_dir=usr/share/zsh/site-functions
    fi
    put() { install -D -m "$1" "$2" "$dir/$3"; }
    case $pkg in
    ocore)
        put 0755 "$gen/ocore" usr/bin/ocore
        put 0644 systemd/ocore.service "$unit_dir/ocore.service"
        # Group ocore, set by the postinst (deb) or the spec (rpm), may read it.
        put 0640 packaging/config/coordinator.toml etc/ocore/coordinator.toml
        put 0644 "$gen/ocore.1.gz" usr/share/man/man1/ocore.1.gz
        put 0644 "$gen/ocore.bash" usr/share/bash-completion/completions/ocore
        put 0644 "$gen/_ocore" "$zsh_dir/_ocore"
        put 0644 "$gen/ocore.fish" usr/share/fish/vendor_completions.d/ocore.fish
        ;;
    ocore-agent)
        put 0755 "$gen/ocore-agent" usr/bin/ocore-agent
        put 0644 systemd/ocore-agent.service "$unit_dir/ocore-agent.service"
        put 0640 packaging/config/agent.toml etc/ocore/agent.toml
        ;;
    esac
    put 0644 packaging/copyright "usr/share/doc/$pkg/copyright"
    if [ "$format" = deb ]; then
        put 0644 "packaging/lintian-overrides/$pkg" "usr/share/lintian/overrides/$pkg"
        mkdir -p "$dir/usr/share/doc/$pkg"
        cat <<EOF | gzip -9n >"$dir/usr/share/doc/$pkg/changelog.Debian.gz"
$pkg ($version-1) unstable; urgency=medium

  * Package of oCore $version, built from the oCore workspace.

 -- oCore engineers <ocore@example.invalid>  $(LC_ALL=C date -u -R -d "@$epoch")
EOF
    else
        # The state directory belongs to the rpm (the deb's postinst creates it instead, as
        # dpkg would otherwise warn about a non-empty directory on every removal).
        mkdir -p "$dir/var/lib/$pkg"
    fi
    find "$dir" -exec touch --no-dereference -d "@$epoch" {} +
}

# The debs are laid out as debhelper does, in debian/PACKAGE of a source tree whose
# debian/control names them, which is what dpkg-shlibdeps reads.
mkdir -p "$work/deb/debian"
printf 'Source: ocore\n\nPackage: ocore\nArchitecture: any\n\nPackage: ocore-agent\nArchitecture: any\n' \
    >"$work/deb/debian/control"

log "building debs"
for pkg in ocore ocore-agent; do
    tree=$work/deb/debian/$pkg
    stage "$pkg" deb "$tree"
    # (dpkg-shlibdeps finds the package's root by its DEBIAN directory.)
    install -d -m 0755 "$tree/DEBIAN"
    # The shared libraries the binary links, as Debian names them, with their versions.
    depends=$(cd "$work/deb" && dpkg-shlibdeps -O "debian/$pkg/usr/bin/$pkg" | sed -n 's/^shlibs:Depends=//p')
    [ -n "$depends" ] || { log "dpkg-shlibdeps found no dependencies of $pkg"; exit 1; }
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 md5sum) >"$tree/DEBIAN/md5sums"
    installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$tree" | cut -f1)
    sed -e "s/@VERSION@/$version-1/" -e "s/@ARCH@/$deb_arch/" \
        -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@SHLIBS_DEPENDS@/$depends/" \
        "packaging/deb/$pkg/control" >"$tree/DEBIAN/control"
    install -m 0644 "packaging/deb/$pkg/conffiles" "$tree/DEBIAN/conffiles"
    for script in postinst prerm postrm; do
        install -m 0755 "packaging/deb/$pkg/$script" "$tree/DEBIAN/$script"
    done
    chmod 0644 "$tree/DEBIAN/md5sums" "$tree/DEBIAN/control"
    dpkg-deb --root-owner-group "${deb_compression[@]}" --build "$tree" "$out/${pkg}_${version}-1_${deb_arch}.deb" >/dev/null
done

log "building rpms"
changelog_date=$(LC_ALL=C date -u -d "@$epoch" '+%a %b %d %Y')
for pkg in ocore ocore-agent; do
    tree=$work/rpm/$pkg
    stage "$pkg" rpm "$tree"
    rpmbuild -bb --quiet "packaging/rpm/$pkg.spec" \
        --define "_topdir $work/rpm/top" \
        --define "_rpmdir $out" \
        --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
        --define "_binary_payload $rpm_payload" \
        --define "ocore_version $version" \
        --define "ocore_stage $tree" \
        --define "ocore_scripts $root/packaging/rpm/$pkg" \
        --define "ocore_changelog_date $changelog_date"
done

log "packages in $out:"
ls -l "$out" >&2
