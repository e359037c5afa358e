#!/usr/bin/env bash
# The deployment topology test (issue 10): HAProxy -> 2 ringway gateways (2 shards each) ->
# 3 backends, each in its own network namespace on a private bridge (10.213.0.0/24).
# See tests/topology/README.md. Needs root, `ip netns`, `tc` and `haproxy`; otherwise it prints
# "SKIPPED: topology test: <why>" and exits 0 (in CI as root, a missing tool fails instead). A failed check exits 1.
#
#   tests/topology/run.sh                      # binaries from target/release, else target/debug
#   RINGWAY_BIN=... RINGWAY_BENCH_BIN=... RWTOP_IO=epoll RWTOP_KEEP=1 tests/topology/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."

skip() {
  echo "SKIPPED: topology test: $*"
  exit 0
}

# In CI as root (RINGWAY_CI=1) the tools are installed by .ci/run: missing ones are a failure.
need_tool() { # $1 = command, $2 = why
  command -v "$1" >/dev/null 2>&1 && return
  if [ "${RINGWAY_CI:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
    echo "topology test: $2, and CI as root must run it"
    exit 1
  fi
  skip "$2"
}

[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "not root (network namespaces need CAP_SYS_ADMIN)"
need_tool ip "no ip (iproute2) command"
need_tool tc "no tc (iproute2) command"
need_tool haproxy "no haproxy (apt-get install haproxy)"
need_tool python3 "no python3"
# Can we create a namespace with a bridge and a veth here (containers often forbid it)?
probe=rwtop-probe-$$
if ! ip netns add "$probe" 2>/dev/null; then
  skip "cannot create network namespaces (ip netns add failed)"
fi
if ! ip -n "$probe" link add rwtop-pbr type bridge 2>/dev/null ||
  ! ip -n "$probe" link add rwtop-pa type veth peer name rwtop-pb 2>/dev/null; then
  ip netns del "$probe" 2>/dev/null
  skip "cannot create a bridge or veth pair in a network namespace"
fi
ip netns del "$probe"

pick() { # $1 = binary name
  for d in target/release target/debug; do
    if [ -x "$d/$1" ]; then
      echo "$PWD/$d/$1"
      return
    fi
  done
}
export RINGWAY_BIN="${RINGWAY_BIN:-$(pick ringway)}"
export RINGWAY_BENCH_BIN="${RINGWAY_BENCH_BIN:-$(pick ringway-bench)}"
if [ -z "$RINGWAY_BIN" ] || [ -z "$RINGWAY_BENCH_BIN" ]; then
  echo "topology test: build first (cargo build --release --workspace): ringway and ringway-bench not found" >&2
  exit 1
fi

# Tear down whatever the driver leaves behind, also when it is killed or this script is
# interrupted: kill (by pid) what still runs in our rwtop-* namespaces, then delete them.
teardown() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^rwtop-'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
  done
}
trap teardown EXIT
trap 'exit 130' INT TERM HUP

# Bounded: the driver takes ~1.5 minutes; 5 minutes is a hang.
timeout --signal=TERM --kill-after=15 300 python3 tests/topology/topology.py
rc=$?
[ $rc -eq 124 ] && echo "topology test: timed out after 300 s" >&2
exit $rc
