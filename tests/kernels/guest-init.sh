#!/bin/sh
# PID 1 of the kernel-matrix guest (tests/kernels/run.sh packs it into the initramfs as /init).
# Runs the checks and prints one `RWK ...` line per result on the serial console; the host
# turns those lines into pass or fail. Every wait here is bounded: the host's timeout is a
# backstop, not the plan.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmp /tmp
ip link set lo up

say() { echo "RWK $*"; }
say kernel "$(uname -r)" cpus="$(nproc)"

ringway probe >/tmp/probe.txt 2>&1
say probe-exit "$?"
while IFS= read -r line; do say "probe | $line"; done </tmp/probe.txt
# The same as an ordinary user with a 64 KiB memlock limit: the lines that differ are the point.
(ulimit -l 64 && exec su nobody -s /bin/sh -c "exec /bin/ringway probe") >/tmp/probe-nobody.txt 2>&1
say probe-nobody-exit "$?"
grep -E "RLIMIT_MEMLOCK|self-test|auto would pick|io_uring:" /tmp/probe-nobody.txt |
  while IFS= read -r line; do say "probe-nobody | $line"; done

# One backend answers JSON on TCP and on a Unix socket; umask 0 so `nobody` may connect too.
(umask 0 && exec ringway-bench backend --listen 127.0.0.1:9001 --listen unix:/tmp/backend.sock --json) \
  >/tmp/backend.log 2>&1 &
backend=$!
n=0
while [ ! -S /tmp/backend.sock ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
[ -S /tmp/backend.sock ] || say "backend did not start: $(cat /tmp/backend.log)"

# $1 = root|nobody, $2 = auto|uring|epoll
run_case() {
  user=$1
  io=$2
  rm -f /tmp/gw.log
  if [ "$user" = root ]; then
    ringway run --config /etc/ringway.toml --io "$io" --shards 2 >/tmp/gw.log 2>&1 &
  else
    # 64 KiB locked memory, as for an ordinary user (and in many containers); then drop root.
    (ulimit -l 64 && exec su nobody -s /bin/sh -c \
      "exec /bin/ringway run --config /etc/ringway.toml --io $io --shards 2") >/tmp/gw.log 2>&1 &
  fi
  gw=$!
  n=0
  while ! grep -q "listening on 127.0.0.1:8080" /tmp/gw.log 2>/dev/null && kill -0 $gw 2>/dev/null &&
    [ $n -lt 100 ]; do
    sleep 0.1
    n=$((n + 1))
  done
  if ! kill -0 $gw 2>/dev/null; then
    wait $gw
    code=$?
    say "start user=$user io=$io exit=$code result=refused"
    while IFS= read -r line; do say "log | $line"; done </tmp/gw.log
    return
  fi
  driver=$(grep -o 'driver=[a-z]*' /tmp/gw.log | head -n1 | cut -d= -f2)
  say "start user=$user io=$io driver=${driver:-unknown} result=started"
  grep -iE "warn|error|self-test|memlock" /tmp/gw.log | while IFS= read -r line; do say "log | $line"; done
  for route in tcp unix page; do
    # The guest is emulated (TCG) and may be starved by a busy host: a response may take
    # seconds, so the timeout is wide, and a window that saw no response at all (no verdict
    # either way) is run once more. Any error fails at once.
    for attempt in 1 2; do
      out=$(ringway-bench load --url "http://127.0.0.1:8080/$route/x" --duration 1s --connections 4 \
        --timeout 10s --json 2>&1)
      reqs=$(echo "$out" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p')
      errs=$(echo "$out" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
      [ "$reqs" = 0 ] && [ "$errs" = 0 ] || break
    done
    if [ -n "$reqs" ] && [ "$reqs" -gt 0 ] && [ "$errs" = 0 ]; then r=pass; else r=fail; fi
    say "check user=$user io=$io driver=${driver:-unknown} route=$route requests=${reqs:-?} errors=${errs:-?} result=$r"
    [ $r = pass ] || say "load | $out"
    [ $r = pass ] || failed_here=1
  done
  if [ -n "${failed_here:-}" ]; then
    kill -0 $gw 2>/dev/null || say "gateway exited"
    tail -n 20 /tmp/gw.log | while IFS= read -r line; do say "log | $line"; done
  fi
  failed_here=
  kill -TERM $gw 2>/dev/null
  n=0
  while kill -0 $gw 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  kill -KILL $gw 2>/dev/null
  wait $gw 2>/dev/null
}

for user in root nobody; do
  for io in auto uring epoll; do
    run_case $user $io
  done
done
kill $backend 2>/dev/null
say done
sync
poweroff -f
