#!/usr/bin/env bash
# Downloads one Debian cloud kernel package and unpacks its vmlinuz, without touching the
# system's apt sources: a private sources list, lists and cache under the cache directory.
#
#   tests/kernels/fetch.sh <suite> <cache-dir>     # suite: bullseye (5.10) | bookworm (6.1)
#
# Prints the path of the unpacked vmlinuz on stdout; progress goes to stderr.
set -euo pipefail
suite=$1
mkdir -p "$2"
cache=$(cd "$2" && pwd)
dir="$cache/$suite"
mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc/parts"
cat >"$dir/etc/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $suite-security main
SRC
apt_opts=(
  -o "Dir::Etc::sourcelist=$dir/etc/sources.list"
  -o "Dir::Etc::sourceparts=$dir/etc/parts"
  -o "Dir::State::Lists=$dir/lists"
  -o "Dir::Cache::archives=$dir/archives"
  -o "Dir::Cache::pkgcache=$dir/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$dir/srcpkgcache.bin"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
# The newest cloud kernel of the suite (security updates included): the metapackage names it.
if [ ! -s "$dir/etc/package" ] || [ -n "${RINGWAY_KERNEL_REFRESH:-}" ]; then
  apt-get "${apt_opts[@]}" -qq update >&2
  pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "fetch.sh: no linux-image-*-cloud-amd64 in $suite" >&2; exit 1; }
  echo "$pkg" >"$dir/etc/package"
fi
pkg=$(cat "$dir/etc/package")
if [ ! -d "$dir/root/boot" ]; then
  (cd "$dir/archives" && apt-get "${apt_opts[@]}" -qq download "$pkg" >&2)
  deb=$(ls "$dir/archives/${pkg}_"*.deb | head -n1)
  rm -rf "$dir/root"
  dpkg-deb -x "$deb" "$dir/root"
fi
ls "$dir/root/boot/vmlinuz-"* | head -n1
