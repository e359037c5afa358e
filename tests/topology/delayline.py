#!/usr/bin/env python3
"""A userspace delay line: joins pairs of TAP devices and forwards every Ethernet frame after a
fixed one-way delay, in both directions. The topology test uses it for link latency where the
kernel has no `sch_netem` (tc netem); it delays everything netem would, the TCP handshake included.

    delayline.py NS_A:TAP_A:NS_B:TAP_B:DELAY_MS [...]

Each TAP must already exist (`ip -n NS tuntap add dev TAP mode tap`) in its network namespace;
this process attaches to it there (setns + TUNSETIFF) and runs until killed. Stdlib only; one
thread; a heap of frames ordered by due time (constant delay per link keeps each direction FIFO).
"""

import ctypes
import fcntl
import heapq
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)


def setns(name):
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
    finally:
        os.close(fd)


def attach(ns, tap):
    """Opens TAP device `tap` of namespace `ns` (the ioctl looks the name up in our namespace)."""
    setns(ns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main(specs):
    peer, delay = {}, {}
    for spec in specs:
        ns_a, tap_a, ns_b, tap_b, ms = spec.split(":")
        a, b = attach(ns_a, tap_a), attach(ns_b, tap_b)
        peer[a], peer[b] = b, a
        delay[a] = delay[b] = float(ms) / 1000.0
    print(f"delay line up: {' '.join(specs)}", flush=True)
    fds = list(peer)
    pending = []  # (due, seq, out_fd, frame)
    seq = 0
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 1.0
        ready, _, _ = select.select(fds, [], [], timeout)
        now = time.monotonic()
        for fd in ready:
            for _ in range(64):  # bounded drain of this device's queue per wake-up
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                seq += 1
                heapq.heappush(pending, (now + delay[fd], seq, peer[fd], frame))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, out, frame = heapq.heappop(pending)
            try:
                os.write(out, frame)
            except OSError:
                pass  # device down or queue full: a lost frame, as on a real link


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
