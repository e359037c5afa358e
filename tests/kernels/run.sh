#!/usr/bin/env bash
# The real-kernel matrix (issue 15): boots Debian's own kernel packages under qemu with an
# initramfs holding busybox, ringway, ringway-bench and the libraries they link, and runs
# tests/kernels/guest-init.sh inside: `ringway probe`, then on --io auto, uring and epoll, as root
# and as `nobody` with `ulimit -l 64`, a proxy route to a TCP backend, one to a Unix-socket backend
# and a fan-out over both, each under load for a second with 0 errors required.
#
#   tests/kernels/run.sh [bullseye] [bookworm]     # default: both (5.10 and 6.1)
#   RINGWAY_QEMU_ACCEL=kvm tests/kernels/run.sh    # KVM instead of TCG (can hang when nested)
#   RINGWAY_KERNELS_REQUIRED=1 ...                 # CI: a reason to skip is a failure
#
# Binaries: RINGWAY_BIN / RINGWAY_BENCH_BIN, else target/debug, else target/release.
# Output: one line per guest check; the guest's serial log is kept in target/kernels/<suite>.log.
# Exit 0 when every check on every kernel passed (or it printed SKIPPED: <why>), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
here=tests/kernels
cache=${RINGWAY_KERNEL_CACHE:-$PWD/target/kernels}
mkdir -p "$cache"

skip() {
  if [ -n "${RINGWAY_KERNELS_REQUIRED:-}" ]; then
    echo "kernel matrix: FAILED: cannot run: $*" >&2
    exit 1
  fi
  echo "SKIPPED: kernel matrix: $*"
  exit 0
}

[ "$(uname -m)" = x86_64 ] || skip "host is $(uname -m), the matrix boots x86_64 kernels"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64 (apt-get install qemu-system-x86)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || skip "no busybox (apt-get install busybox-static)"
ldd "$busybox" >/dev/null 2>&1 && skip "$busybox is dynamically linked (apt-get install busybox-static)"
command -v cpio >/dev/null || skip "no cpio (apt-get install cpio)"

pick() {
  for d in target/debug target/release; do
    [ -x "$d/$1" ] && { echo "$PWD/$d/$1"; return; }
  done
}
rw=${RINGWAY_BIN:-$(pick ringway)}
rwb=${RINGWAY_BENCH_BIN:-$(pick ringway-bench)}
if [ -z "$rw" ] || [ -z "$rwb" ]; then
  echo "kernel matrix: build first (cargo build --workspace --bins): ringway or ringway-bench missing" >&2
  exit 1
fi

# The initramfs, shared by every kernel: the binaries (debug info stripped), their libraries at
# the paths ldd names, busybox, the config and the init script.
build_initramfs() {
  local stage="$cache/stage" out="$cache/initramfs.cpio.gz"
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,etc,proc,sys,dev,tmp}
  cp "$busybox" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  local name
  for b in "$rw" "$rwb"; do
    [ "$b" = "$rw" ] && name=ringway || name=ringway-bench
    objcopy --strip-debug "$b" "$stage/bin/$name" 2>/dev/null || cp "$b" "$stage/bin/$name"
    for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
      mkdir -p "$stage$(dirname "$lib")"
      cp -L "$lib" "$stage$lib"
    done
  done
  cp "$here/guest-init.sh" "$stage/init"
  chmod +x "$stage/init"
  cp "$here/ringway.toml" "$stage/etc/ringway.toml"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  echo "$out"
}

accel_args=(-accel tcg -cpu max)
[ "${RINGWAY_QEMU_ACCEL:-tcg}" = kvm ] && accel_args=(-enable-kvm -cpu host)

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bullseye bookworm)

initrd=$(build_initramfs) || { echo "kernel matrix: cannot build the initramfs" >&2; exit 1; }
# 2 users x 3 --io choices x 3 routes.
expected=18
failed=0
for suite in "${suites[@]}"; do
  vmlinuz=$("$here/fetch.sh" "$suite" "$cache") || skip "cannot download $suite's kernel package"
  log="$cache/$suite.log"
  echo "== $suite: $(basename "$vmlinuz") (qemu ${accel_args[*]})"
  start=$(date +%s)
  # Bounded: a TCG boot takes ~15 s and the checks ~1 minute; 6 minutes is a hang.
  timeout --kill-after=10 360 qemu-system-x86_64 "${accel_args[@]}" -m 1024 -smp 2 \
    -nographic -no-reboot -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$log" 2>&1
  rc=$?
  tr -d '\r' <"$log" | grep '^RWK ' | sed 's/^RWK /  /'
  passed=$(tr -d '\r' <"$log" | grep -c '^RWK check .*result=pass')
  bad=$(tr -d '\r' <"$log" | grep -cE '^RWK (check|start) .*result=(fail|refused)')
  done_line=$(tr -d '\r' <"$log" | grep -c '^RWK done')
  took=$(($(date +%s) - start))
  if [ "$passed" = "$expected" ] && [ "$bad" = 0 ] && [ "$done_line" = 1 ]; then
    echo "== $suite: PASS ($passed/$expected checks, ${took}s)"
  else
    echo "== $suite: FAIL ($passed/$expected checks passed, $bad failed, qemu exit $rc, ${took}s; serial log: $log)"
    [ "$done_line" = 1 ] || tail -n 30 "$log" | sed 's/^/  | /'
    failed=1
  fi
done
exit $failed
