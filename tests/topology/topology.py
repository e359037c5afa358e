#!/usr/bin/env python3
"""ringway's deployment topology, end to end, in network namespaces (issue 10).

    client ──► lb (HAProxy 2.6) ──► gw1, gw2 (ringway, --shards 2) ──► be1, be2, be3 (ringway-bench backend)

Every node is a network namespace `rwtop-<node>` with one veth into a bridge that lives in its
own namespace `rwtop-br`, on the private subnet 10.213.0.0/24. Nothing is created in, or routed
through, the host's default namespace. After setting the namespaces up this driver moves itself
into `rwtop-client`, so every HTTP request it makes (and every load generator it starts) comes
from the client host; the other processes are started with `ip netns exec`.

Checks (each prints its figures; any failed check makes the exit status 1):
  a  bounded load through HAProxy (proxy route + fan-out route): zero errors
  b  each backend accepted at most pool-bound connections (gateways x shards x max_connections
     per upstream it serves), i.e. far fewer than requests
  c  connections spread over both gateways and over both shards of each
  d  SIGTERM gw1 under load: /readyz 503, HAProxy marks it DOWN, gw1 exits 0, zero lost requests
  e  SIGKILL be2's server under load: endpoint ejected, fan-out answers partial (Ringway-Partial:
     ads), no hung request (load timeouts = 0), then recovery after restart
  f  tc netem latency on the backend links: fan-out latency ~ slowest call, not the sum; pooled
     vs max_idle = 0 (a new backend connection per call)

Stdlib only. Binaries: $RINGWAY_BIN and $RINGWAY_BENCH_BIN (run.sh picks target/release, then
target/debug). $RWTOP_IO selects the gateway's I/O driver (default auto). $RWTOP_KEEP=1 keeps the
work directory (configs, logs).
"""

import ctypes
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "rwtop"
NET = "10.213.0"
LAT_NET = "10.213.1"   # backend links with latency, for check (f) only
NODES = {"client": 2, "lb": 10, "gw1": 21, "gw2": 22, "be1": 31, "be2": 32, "be3": 33}
BRIDGE_NS = f"{PREFIX}-br"
GATEWAYS = ["gw1", "gw2"]
BACKENDS = ["be1", "be2", "be3"]
SHARDS = 2
GW_PORT, ADMIN_PORT, BE_PORT = 8080, 9901, 9001
NOPOOL_PORT, NOPOOL_ADMIN = 8081, 9902
LAT_PORT, LAT_ADMIN = 8082, 9903
LB_PORT, LB_STATS = 8080, 8404
POOL_MAX = 16          # pool max_connections (= max_idle) per endpoint per shard
EJECT_FOR_S = 2.0
DRAIN_GRACE_S = 2.0    # >= HAProxy inter (500ms) * fall (2), with a second of slack
# One-way netem delay on each backend link, applied on both ends (so the RTT is twice this).
NETEM_MS = {"be1": 1, "be2": 2, "be3": 3}

# Which backend hosts serve which upstream (endpoints are all BE_PORT).
UPSTREAMS = {
    "items": ["be1", "be2", "be3"],  # proxy route /item/, round robin
    "profile": ["be1"],              # fan-out call, required
    "ads": ["be2"],                  # fan-out call, optional
    "recs": ["be3"],                 # fan-out call, optional
}

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RINGWAY = os.environ.get("RINGWAY_BIN", "")
BENCH = os.environ.get("RINGWAY_BENCH_BIN", "")
IO = os.environ.get("RWTOP_IO", "auto")


def ns(node):
    return f"{PREFIX}-{node}"


def addr(node):
    return f"{NET}.{NODES[node]}"


def lat_addr(node):
    """The node's address on the latency network (check f)."""
    return f"{LAT_NET}.{NODES[node]}"


def log(msg):
    print(msg, flush=True)


class CheckFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Namespaces


def sh(*argv, check=True, quiet=False):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    if not quiet and r.returncode != 0:
        log(f"  (ignored) {' '.join(argv)}: {r.stderr.strip()}")
    return r


def our_namespaces():
    r = sh("ip", "netns", "list", check=False, quiet=True)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX + "-")]


def delete_namespaces():
    """Kills what still runs in our namespaces (by pid) and deletes them. Idempotent."""
    me = os.getpid()
    for n in our_namespaces():
        pids = sh("ip", "netns", "pids", n, check=False, quiet=True).stdout.split()
        for p in pids:
            if int(p) != me:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        sh("ip", "netns", "del", n, check=False, quiet=True)


def create_topology():
    leftovers = our_namespaces()
    if leftovers:
        log(f"removing namespaces left by an earlier run: {' '.join(leftovers)}")
        delete_namespaces()
    sh("ip", "netns", "add", BRIDGE_NS)
    sh("ip", "-n", BRIDGE_NS, "link", "set", "lo", "up")
    sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for node in NODES:
        n = ns(node)
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
        # Created inside the bridge namespace; the peer goes straight into the node's namespace.
        sh("ip", "-n", BRIDGE_NS, "link", "add", f"v-{node}", "type", "veth",
           "peer", "name", "eth0", "netns", n)
        sh("ip", "-n", BRIDGE_NS, "link", "set", f"v-{node}", "master", "br0", "up")
        sh("ip", "-n", n, "addr", "add", f"{addr(node)}/24", "dev", "eth0")
        sh("ip", "-n", n, "link", "set", "eth0", "up")
    log(f"topology: bridge br0 in {BRIDGE_NS}; "
        + ", ".join(f"{ns(k)}={addr(k)}" for k in NODES))


def enter_namespace(name):
    """setns(2) this (single-threaded) process into network namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
    finally:
        os.close(fd)


def netem_available():
    """Whether this kernel has sch_netem (probed on a throwaway device in the bridge namespace)."""
    sh("ip", "-n", BRIDGE_NS, "link", "add", "probe0", "type", "dummy", check=False, quiet=True)
    r = sh("ip", "netns", "exec", BRIDGE_NS, "tc", "qdisc", "add", "dev", "probe0", "root",
           "netem", "delay", "1ms", check=False, quiet=True)
    sh("ip", "-n", BRIDGE_NS, "link", "del", "probe0", check=False, quiet=True)
    return r.returncode == 0


def create_latency_net():
    """A second network, 10.213.1.0/24 on bridge br1, where every backend link has latency
    NETEM_MS one way (both ends): gw1 joins it on eth1, each backend on eth1. Only the gateways
    of check (f) use it. Returns "netem", the delay line's arguments, or None when this machine
    has neither sch_netem nor TAP devices (check f is then skipped)."""
    sh("ip", "-n", BRIDGE_NS, "link", "add", "br1", "type", "bridge")
    sh("ip", "-n", BRIDGE_NS, "link", "set", "br1", "up")
    sh("ip", "-n", BRIDGE_NS, "link", "add", "l-gw1", "type", "veth", "peer", "name", "eth1",
       "netns", ns("gw1"))
    sh("ip", "-n", BRIDGE_NS, "link", "set", "l-gw1", "master", "br1", "up")
    sh("ip", "-n", ns("gw1"), "addr", "add", f"{lat_addr('gw1')}/24", "dev", "eth1")
    sh("ip", "-n", ns("gw1"), "link", "set", "eth1", "up")
    use_netem = netem_available()
    delayline = []
    for be, ms in NETEM_MS.items():
        if use_netem:
            sh("ip", "-n", BRIDGE_NS, "link", "add", f"l-{be}", "type", "veth", "peer", "name",
               "eth1", "netns", ns(be))
            for where, dev in ((ns(be), "eth1"), (BRIDGE_NS, f"l-{be}")):
                sh("ip", "netns", "exec", where, "tc", "qdisc", "replace", "dev", dev, "root",
                   "netem", "delay", f"{ms}ms", "limit", "10000")
        else:
            if not os.path.exists("/dev/net/tun"):
                return None
            try:
                sh("ip", "-n", BRIDGE_NS, "tuntap", "add", "dev", f"l-{be}", "mode", "tap")
                sh("ip", "-n", ns(be), "tuntap", "add", "dev", "eth1", "mode", "tap")
            except RuntimeError as e:
                log(f"cannot create TAP devices: {e}")
                return None
            delayline.append(f"{ns(be)}:eth1:{BRIDGE_NS}:l-{be}:{ms}")
        sh("ip", "-n", BRIDGE_NS, "link", "set", f"l-{be}", "master", "br1", "up")
        sh("ip", "-n", ns(be), "addr", "add", f"{lat_addr(be)}/24", "dev", "eth1")
        sh("ip", "-n", ns(be), "link", "set", "eth1", "up")
    return "netem" if use_netem else delayline


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process the driver started, by name; all are killed (by pid) at teardown."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = {}   # name -> Popen
        self.all = []    # (name, Popen, logpath)

    def start(self, name, node, argv):
        logpath = os.path.join(self.workdir, f"{name}.log")
        f = open(logpath, "ab")
        full = argv if node is None else ["ip", "netns", "exec", ns(node), *argv]
        p = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        self.live[name] = p
        self.all.append((name, p, logpath))
        return p

    def signal(self, name, sig):
        p = self.live[name]
        if p.poll() is None:
            p.send_signal(sig)

    def wait(self, name, timeout):
        p = self.live.pop(name)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
            return None

    def stop_all(self):
        # Teardown, not a test of shutdown: SIGKILL, so it never waits for a drain.
        for name, p, _ in self.all:
            if p.poll() is None:
                p.kill()
        for name, p, _ in self.all:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"  {name} (pid {p.pid}) did not die within 5 s of SIGKILL")
        self.live.clear()

    def dump_logs(self, lines=25):
        for name, _, path in self.all:
            try:
                with open(path, "rb") as f:
                    tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                log(f"----- {name} ({path}), last {len(tail)} lines")
                for t in tail:
                    log(f"  {t}")


# ---------------------------------------------------------------------------------------------
# HTTP (from the client namespace)


def http_get(host, port, path, timeout=3.0):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def try_get(host, port, path, timeout=1.0):
    try:
        return http_get(host, port, path, timeout)
    except OSError:
        return None, {}, b""


def wait_until(what, pred, timeout, interval=0.1):
    """Polls pred() until it is truthy (returns its value) or `timeout` passes (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except (OSError, http.client.HTTPException):
            v = None
        if v:
            return v
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def backend_stats(be):
    st, _, body = http_get(addr(be), BE_PORT, "/__stats")
    if st != 200:
        raise CheckFailed(f"{be} /__stats answered {st}")
    return json.loads(body)


def metrics(host, port=ADMIN_PORT):
    """Parses Prometheus text into {(name, frozenset(labels)): value}."""
    st, _, body = http_get(host, port, "/metrics")
    if st != 200:
        raise CheckFailed(f"{host}:{port}/metrics answered {st}")
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        if "{" in key:
            name, _, rest = key.partition("{")
            labels = []
            for part in rest.rstrip("}").split('",'):
                if part:
                    k, _, v = part.partition("=")
                    labels.append((k, v.strip('"')))
            out[(name, frozenset(labels))] = float(val)
        else:
            out[(key, frozenset())] = float(val)
    return out


def msum(m, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


def by_label(m, name, label):
    out = {}
    for (n, ls), v in m.items():
        if n == name:
            d = dict(ls)
            out[d.get(label)] = out.get(d.get(label), 0) + v
    return out


def haproxy_status():
    """{server: status} of backend `ringway` from HAProxy's CSV stats page."""
    st, _, body = http_get(addr("lb"), LB_STATS, "/stats;csv")
    if st != 200:
        raise CheckFailed(f"HAProxy stats answered {st}")
    lines = body.decode().splitlines()
    cols = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(cols, line.split(",")))
        if row.get("pxname") == "ringway" and row.get("svname") in GATEWAYS:
            out[row["svname"]] = row.get("status", "")
    return out


# ---------------------------------------------------------------------------------------------
# Configs


def gateway_config(node, port=GW_PORT, admin=ADMIN_PORT, max_idle=POOL_MAX, be_addr=addr):
    pool = (f'pool = {{ max_idle = {max_idle}, idle_timeout = "30s", '
            f'max_connections = {POOL_MAX}, queue_timeout = "1s" }}')
    health = f'health = {{ fail_threshold = 3, eject_for = "{EJECT_FOR_S:g}s" }}'
    out = [f"""# generated by tests/topology/topology.py for {ns(node)}
[server]
listen = ["{addr(node)}:{port}"]
shards = {SHARDS}
io = "{IO}"
pin_cpus = false

[admin]
listen = "{addr(node)}:{admin}"

[timeouts]
client_idle = "60s"
upstream_connect = "500ms"
upstream_response = "3s"
drain = "5s"
drain_grace = "{DRAIN_GRACE_S:g}s"
"""]
    for name, hosts in UPSTREAMS.items():
        eps = ", ".join(f'"{be_addr(h)}:{BE_PORT}"' for h in hosts)
        out.append(f'[[upstream]]\nname = "{name}"\nendpoints = [{eps}]\n{pool}\n{health}\n')
    out.append('[[route]]\npath_prefix = "/item/"\nupstream = "items"\n')
    for name in ("profile", "ads", "recs"):
        out.append(f'[[route]]\npath_prefix = "/u/{name}/"\nupstream = "{name}"\n')
    out.append('[[route]]\npath_prefix = "/page"\n[route.fanout]\ntimeout = "2s"\n')
    for name, required in (("profile", True), ("ads", False), ("recs", False)):
        out.append(f'[[route.fanout.call]]\nname = "{name}"\nupstream = "{name}"\n'
                   f'path = "/{name}"\nrequired = {str(required).lower()}\ntimeout = "1s"\n')
    return "\n".join(out)


def pool_bound(be):
    """Most connections one backend host may see from all gateways: per upstream it serves,
    gateways x shards x max_connections."""
    n = sum(1 for hosts in UPSTREAMS.values() if be in hosts)
    return n * len(GATEWAYS) * SHARDS * POOL_MAX


# ---------------------------------------------------------------------------------------------
# The run


class Topology:
    def __init__(self, workdir):
        self.w = workdir
        self.p = Procs(workdir)
        self.results = {}
        self.failures = []

    def check(self, ok, what):
        log(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)

    # -- processes

    def start_backend(self, be):
        self.p.start(be, be, [BENCH, "backend", "--listen", f"{addr(be)}:{BE_PORT}",
                              "--listen", f"{lat_addr(be)}:{BE_PORT}", "--json"])

    def start_gateway(self, gw, name=None, port=GW_PORT, admin=ADMIN_PORT, max_idle=POOL_MAX,
                      be_addr=addr):
        name = name or gw
        cfg = os.path.join(self.w, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(gateway_config(gw, port, admin, max_idle, be_addr))
        r = sh(RINGWAY, "check", "--config", cfg, check=False, quiet=True)
        if r.returncode != 0:
            raise CheckFailed(f"ringway check rejected {cfg}: {r.stderr.strip() or r.stdout.strip()}")
        self.p.start(name, gw, [RINGWAY, "run", "--config", cfg])
        wait_until(f"{name} /readyz 200",
                   lambda: try_get(addr(gw), admin, "/readyz")[0] == 200, 20)

    def start_haproxy(self):
        cfg = os.path.join(REPO, "deploy", "haproxy.cfg")
        r = sh("haproxy", "-c", "-f", cfg, check=False, quiet=True)
        if r.returncode != 0:
            raise CheckFailed(f"haproxy -c rejected {cfg}: {r.stdout}{r.stderr}")
        self.p.start("haproxy", "lb", ["haproxy", "-db", "-f", cfg])

    def load(self, name, path, seconds, rate, conns=16, host="lb", port=LB_PORT, timeout="5s"):
        """Starts ringway-bench load from the client namespace (this process's namespace)."""
        argv = [BENCH, "load", "--url", f"http://{addr(host)}:{port}{path}",
                "--connections", str(conns), "--duration", f"{seconds}s",
                "--timeout", timeout, "--json"]
        if rate:
            argv += ["--rate", str(rate)]
        return self.p.start(name, None, argv)

    def load_result(self, name, timeout=60):
        self.p.wait(name, timeout)
        path = os.path.join(self.w, f"{name}.log")
        with open(path) as f:
            for line in reversed(f.read().splitlines()):
                if line.startswith("{"):
                    return json.loads(line)
        raise CheckFailed(f"load {name} printed no JSON result (see {path})")

    # -- phases

    def setup(self):
        create_topology()
        lat = create_latency_net()
        self.latency_by = None
        if lat is None:
            log("latency network unavailable (no sch_netem, no /dev/net/tun): check (f) will be skipped")
        elif lat == "netem":
            self.latency_by = "tc netem"
        else:
            self.latency_by = "userspace delay line over TAP devices (this kernel has no sch_netem)"
            self.p.start("delayline", None, [sys.executable, os.path.join(HERE, "delayline.py"), *lat])
        if self.latency_by:
            log(f"latency network {LAT_NET}.0/24 on br1: gw1 eth1 + backends' eth1, "
                f"latency by {self.latency_by}")
        enter_namespace(ns("client"))
        for be in BACKENDS:
            self.start_backend(be)
        for be in BACKENDS:
            wait_until(f"{be} backend", lambda be=be: try_get(addr(be), BE_PORT, "/__stats")[0] == 200, 10)
        for gw in GATEWAYS:
            self.start_gateway(gw)
        self.start_haproxy()
        def both_up():
            if self.p.live["haproxy"].poll() is not None:
                raise CheckFailed("haproxy exited at start-up (see haproxy.log)")
            st = haproxy_status()
            return len(st) == 2 and all(s == "UP" for s in st.values())

        wait_until("HAProxy: gw1 and gw2 UP", both_up, 15)
        st, h, body = http_get(addr("lb"), LB_PORT, "/page?user=1")
        if st != 200 or not body.startswith(b'{"profile":'):
            raise CheckFailed(f"GET /page through HAProxy: {st} {body[:200]!r}")
        log("all up: 3 backends, 2 gateways x 2 shards, HAProxy; /page through HAProxy answers 200")

    def phase_a_b_c(self):
        log("\n(a) bounded load through HAProxy: /item/ 600 req/s + /page 300 req/s, 16 conns each, 6 s")
        be0 = {be: backend_stats(be) for be in BACKENDS}
        self.load("load-a-item", "/item/1", 6, 600)
        self.load("load-a-page", "/page?user=1", 6, 300)
        item, page = self.load_result("load-a-item"), self.load_result("load-a-page")
        for nm, r in (("/item/", item), ("/page", page)):
            log(f"  {nm}: {r['requests']} requests, {r['errors']} errors {r['error_kinds']}, "
                f"{r['rps']:.0f} req/s, p50 {r['p50_us']/1000:.2f} ms, p99 {r['p99_us']/1000:.2f} ms")
            self.check(r["errors"] == 0 and r["requests"] > 0, f"(a) {nm}: zero errors")
        self.results["a"] = {"item": item, "page": page}

        log("\n(b) backend connections vs requests (Δ over the load, from each backend's /__stats)")
        rb = {}
        for be in BACKENDS:
            s = backend_stats(be)
            acc = s["accepted"] - be0[be]["accepted"] - 1   # minus this /__stats connection
            req = s["requests"] - be0[be]["requests"] - 1
            bound = pool_bound(be)
            rb[be] = {"accepted": acc, "requests": req, "bound": bound}
            log(f"  {be}: {acc} connections accepted for {req} requests "
                f"({req / max(acc, 1):.0f} requests/connection); pool bound {bound} "
                f"= {sum(1 for h in UPSTREAMS.values() if be in h)} upstream(s) x "
                f"{len(GATEWAYS)} gateways x {SHARDS} shards x max_connections {POOL_MAX}")
            self.check(0 < acc <= bound and req >= 10 * acc,
                       f"(b) {be}: connections <= pool bound and << requests")
        self.results["b"] = rb

        log("\n(c) spread over gateways and shards (gateways' /metrics)")
        rc = {}
        for gw in GATEWAYS:
            m = metrics(addr(gw))
            shards = by_label(m, "ringway_shard_accepts_total", "shard")
            reqs = msum(m, "ringway_requests_total")
            opened = by_label(m, "ringway_upstream_connections_opened_total", "upstream")
            rc[gw] = {"shard_accepts": shards, "requests": reqs, "upstream_opened": opened}
            log(f"  {gw}: client connections accepted per shard {dict(sorted(shards.items()))}, "
                f"requests {reqs:.0f}, backend connections opened {dict(sorted(opened.items()))}")
            self.check(len(shards) == SHARDS and all(v > 0 for v in shards.values()),
                       f"(c) {gw}: every shard accepted connections")
        total = sum(rc[g]["requests"] for g in GATEWAYS)
        share = {g: rc[g]["requests"] / max(total, 1) for g in GATEWAYS}
        log("  request share: " + ", ".join(f"{g} {share[g]:.0%}" for g in GATEWAYS))
        self.check(all(s >= 0.3 for s in share.values()), "(c) each gateway served >= 30% of requests")
        self.results["c"] = rc

    def phase_d_drain(self):
        log("\n(d) drain gw1 (SIGTERM) under load through HAProxy: 10 s, SIGTERM at 2 s")
        m0 = {gw: msum(metrics(addr(gw)), "ringway_requests_total") for gw in GATEWAYS}
        self.load("load-d-item", "/item/1", 10, 600)
        self.load("load-d-page", "/page?user=1", 10, 300)
        time.sleep(2)
        t0 = time.monotonic()
        self.p.signal("gw1", signal.SIGTERM)
        st = wait_until("gw1 /readyz 503",
                        lambda: try_get(addr("gw1"), ADMIN_PORT, "/readyz")[0] == 503, 2, 0.02)
        t_ready = time.monotonic() - t0
        wait_until("HAProxy marks gw1 DOWN",
                   lambda: haproxy_status().get("gw1", "").startswith("DOWN"), 5, 0.05)
        t_down = time.monotonic() - t0
        gw1_served = msum(metrics(addr("gw1")), "ringway_requests_total") - m0["gw1"]
        rc = self.p.wait("gw1", DRAIN_GRACE_S + 5 + 5)
        t_exit = time.monotonic() - t0
        log(f"  readyz 503 after {t_ready*1000:.0f} ms; HAProxy DOWN after {t_down*1000:.0f} ms "
            f"(drain_grace {DRAIN_GRACE_S:g} s); gw1 exited {rc} after {t_exit:.2f} s")
        self.check(bool(st), "(d) gw1 /readyz answered 503 while draining")
        self.check(t_down < DRAIN_GRACE_S, "(d) HAProxy noticed before drain_grace ended")
        self.check(rc == 0, "(d) gw1 exited 0")
        item, page = self.load_result("load-d-item"), self.load_result("load-d-page")
        lost = item["errors"] + page["errors"]
        gw2_served = msum(metrics(addr("gw2")), "ringway_requests_total") - m0["gw2"]
        log(f"  load: /item/ {item['requests']} requests {item['error_kinds']}, "
            f"/page {page['requests']} requests {page['error_kinds']}; "
            f"gw1 served {gw1_served:.0f} (until DOWN), gw2 {gw2_served:.0f}")
        self.check(lost == 0, f"(d) drain lost {lost} requests (want 0)")
        self.results["d"] = {"readyz_503_ms": t_ready * 1000, "haproxy_down_ms": t_down * 1000,
                             "exit": rc, "exit_s": t_exit, "lost": lost,
                             "requests": item["requests"] + page["requests"]}
        self.start_gateway("gw1")
        wait_until("HAProxy marks gw1 UP again",
                   lambda: haproxy_status().get("gw1") == "UP", 10, 0.1)
        log("  gw1 restarted; HAProxy has it UP again")

    def phase_e_backend_kill(self):
        log("\n(e) SIGKILL be2's server under load (HAProxy, 12 s): kill at 2 s, restart at 5 s")
        f0 = {gw: metrics(addr(gw)) for gw in GATEWAYS}
        self.load("load-e-item", "/item/1", 12, 600, timeout="5s")
        self.load("load-e-page", "/page?user=1", 12, 300, timeout="5s")
        time.sleep(2)
        self.p.signal("be2", signal.SIGKILL)
        self.p.wait("be2", 5)
        t0 = time.monotonic()

        def ejected():
            return sum(msum(metrics(addr(gw)), "ringway_upstream_endpoints_ejected") for gw in GATEWAYS)

        ej = wait_until("ejection of be2", ejected, 3, 0.05)
        t_ej = time.monotonic() - t0
        st, hdr, body = http_get(addr("lb"), LB_PORT, "/page?user=1")
        partial = hdr.get("ringway-partial", "")
        doc = json.loads(body) if st == 200 else {}
        log(f"  ejected endpoints (summed over gateways x shards x upstreams): {ej:.0f}, "
            f"{t_ej*1000:.0f} ms after the kill")
        log(f"  GET /page during the outage: {st}, Ringway-Partial: {partial!r}, "
            f"ads={json.dumps(doc.get('ads'))}, Server-Timing: {hdr.get('server-timing')!r}")
        self.check(st == 200 and "ads" in partial and doc.get("ads", 0) is None
                   and doc.get("profile") is not None, "(e) fan-out answered partial (ads null)")
        time.sleep(max(0, 3 - (time.monotonic() - t0)))
        self.start_backend("be2")
        t1 = time.monotonic()
        wait_until("be2 backend back", lambda: try_get(addr("be2"), BE_PORT, "/__stats")[0] == 200, 5)

        def recovered():
            if ejected() != 0:
                return False
            st, hdr, _ = http_get(addr("lb"), LB_PORT, "/page?user=1")
            return st == 200 and "ringway-partial" not in hdr

        wait_until("recovery (no ejected endpoint, /page complete)", recovered, EJECT_FOR_S + 6, 0.2)
        t_rec = time.monotonic() - t1
        item, page = self.load_result("load-e-item"), self.load_result("load-e-page")
        time.sleep(0.5)
        be2 = backend_stats("be2")
        log(f"  recovered {t_rec*1000:.0f} ms after the restart (eject_for {EJECT_FOR_S:g} s); "
            f"restarted be2 has since answered {be2['requests']} requests "
            f"on {be2['accepted']} connections")
        fan = {}
        for gw in GATEWAYS:
            m1 = metrics(addr(gw))
            for (n, ls), v in m1.items():
                if n == "ringway_fanout_calls_total":
                    d = dict(ls)
                    k = (d["call"], d["outcome"])
                    fan[k] = fan.get(k, 0) + v - f0[gw].get((n, ls), 0)
        fan = {k: int(v) for k, v in sorted(fan.items()) if v}
        statuses = {}
        for gw in GATEWAYS:
            m1 = metrics(addr(gw))
            for (n, ls), v in m1.items():
                if n == "ringway_requests_total":
                    d = dict(ls)
                    k = (d.get("route"), d.get("status"))
                    statuses[k] = statuses.get(k, 0) + v - f0[gw].get((n, ls), 0)
        bad = {f"{r} {st}": int(v) for (r, st), v in sorted(statuses.items())
               if v and not st.startswith("2")}
        log(f"  gateway answers other than 2xx during the phase (route status: count): {bad or 'none'}")
        log(f"  fan-out calls during the phase by (call, outcome): {fan}")
        for nm, r in (("/item/", item), ("/page", page)):
            log(f"  {nm}: {r['requests']} requests, errors {r['error_kinds']}, "
                f"max latency {r['max_us']/1000:.1f} ms")
        self.check(item["error_kinds"]["timeout"] == 0 and page["error_kinds"]["timeout"] == 0,
                   "(e) no hung request (load timeouts = 0)")
        self.check(page["errors"] == 0, "(e) /page: zero errors (ads is optional)")
        # A proxied request already written on a *fresh* backend connection when the backend dies
        # is not retried (DESIGN.md: only failures on reused connections are): 502, at most one
        # per request in flight at the kill. Anything else (503, 504, timeouts) is a failure.
        n502 = sum(v for k, v in bad.items() if k.endswith(" 502"))
        self.check(item["error_kinds"]["non_2xx"] == n502 and item["errors"] == n502 and n502 <= 16,
                   f"(e) /item/: {item['errors']} errors, all 502 from requests in flight on be2 "
                   "at the kill (<= 16 connections), none after")
        self.results["e_non2xx"] = bad
        self.check(fan.get(("ads", "error"), 0) + fan.get(("ads", "timeout"), 0) > 0,
                   "(e) fan-out call failures counted in ringway_fanout_calls_total")
        self.check(be2["requests"] > 1, "(e) the restarted be2 gets traffic again")
        self.results["e"] = {"ejected_ms": t_ej * 1000, "recovered_ms": t_rec * 1000,
                             "fanout": {f"{c}/{o}": v for (c, o), v in fan.items()},
                             "item_errors": item["error_kinds"], "page_errors": page["error_kinds"]}

    def phase_f_latency(self):
        if not self.latency_by:
            log("\n(f) skipped: this machine has neither sch_netem (tc netem) nor /dev/net/tun")
            return
        log(f"\n(f) latency on the backend links ({self.latency_by}), one way on each end: "
            + ", ".join(f"{b} {ms} ms (RTT {2*ms} ms)" for b, ms in NETEM_MS.items()))
        # Two more gateways in gw1's namespace whose upstreams are the backends' addresses on the
        # latency network: the usual pool, and max_idle = 0 (a new backend connection per call).
        # `ringway check` must accept max_idle = 0 (start_gateway runs it first).
        self.start_gateway("gw1", name="gw1-lat-pooled", port=LAT_PORT, admin=LAT_ADMIN,
                           be_addr=lat_addr)
        self.start_gateway("gw1", name="gw1-lat-nopool", port=NOPOOL_PORT, admin=NOPOOL_ADMIN,
                           max_idle=0, be_addr=lat_addr)
        for port in (LAT_PORT, NOPOOL_PORT):  # warm up (ARP, first connections)
            for _ in range(5):
                http_get(addr("gw1"), port, "/page?user=1")
        paths = [("profile (be1)", "/u/profile/x"), ("ads (be2)", "/u/ads/x"),
                 ("recs (be3)", "/u/recs/x"), ("fan-out /page", "/page?user=1")]
        table = {}
        for label, port in (("pooled", LAT_PORT), ("max_idle=0", NOPOOL_PORT)):
            for i, (what, path) in enumerate(paths):
                be0 = {be: backend_stats(be)["accepted"] for be in BACKENDS}
                name = f"load-f-{port}-{i}"
                self.load(name, path, 3, None, conns=2, host="gw1", port=port)
                r = self.load_result(name)
                acc = sum(backend_stats(be)["accepted"] - be0[be] - 1 for be in BACKENDS)
                table[(label, what)] = (r["p50_us"] / 1000, r["p99_us"] / 1000, r["requests"], acc,
                                        r["errors"])
        log(f"  {'route':<16} {'config':<11} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} "
            f"{'backend conns':>13} errors")
        for (label, what), (p50, p99, n, acc, err) in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            log(f"  {what:<16} {label:<11} {p50:7.2f} {p99:7.2f} {n:9d} {acc:13d} {err}")
        for label in ("pooled", "max_idle=0"):
            calls = [table[(label, w)][0] for w, _ in paths[:3]]
            fan = table[(label, "fan-out /page")][0]
            log(f"  {label}: fan-out p50 {fan:.2f} ms; slowest single call {max(calls):.2f} ms; "
                f"sum of calls {sum(calls):.2f} ms")
            self.check(fan < 0.5 * (max(calls) + sum(calls)),
                       f"(f) {label}: fan-out latency nearer the slowest call than the sum")
            self.check(all(table[(label, w)][4] == 0 for w, _ in paths), f"(f) {label}: zero errors")
        pf, nf = table[("pooled", "fan-out /page")], table[("max_idle=0", "fan-out /page")]
        log(f"  pooling saves {nf[0] - pf[0]:.2f} ms per fan-out request at p50 "
            f"({pf[0]:.2f} vs {nf[0]:.2f} ms); backend connections {pf[3]} (pooled) vs {nf[3]} "
            f"for {nf[2]} requests x 3 calls (max_idle=0)")
        self.check(nf[3] >= nf[2] * 3 * 0.9, "(f) max_idle=0 opens a backend connection per call")
        self.check(pf[3] <= 3 * 2 * SHARDS, "(f) pooled: (almost) no new backend connections")
        self.check(nf[0] > pf[0], "(f) pooled fan-out is faster than max_idle=0")
        self.results["f"] = {f"{label} {what}": {"p50_ms": v[0], "p99_ms": v[1], "requests": v[2],
                                                 "backend_conns": v[3]}
                             for (label, what), v in table.items()}

    def run(self):
        self.setup()
        for phase in (self.phase_a_b_c, self.phase_d_drain, self.phase_e_backend_kill,
                      self.phase_f_latency):
            phase()
        # Every process must still be running (no crash along the way).
        for name, p in self.p.live.items():
            self.check(p.poll() is None, f"{name} still running at the end")


def main():
    for var, path in (("RINGWAY_BIN", RINGWAY), ("RINGWAY_BENCH_BIN", BENCH)):
        if not path or not os.access(path, os.X_OK):
            log(f"topology: ${var} must name an executable (got {path!r})")
            return 2
    keep = os.environ.get("RWTOP_KEEP") == "1"
    workdir = tempfile.mkdtemp(prefix="rwtop-")
    # SIGTERM/SIGHUP: unwind through `finally` so everything is torn down.
    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    t = Topology(workdir)
    started = time.monotonic()
    ok = False
    try:
        log(f"ringway {RINGWAY} (--io {IO}), ringway-bench {BENCH}, work dir {workdir}")
        t.run()
        ok = not t.failures
    except Exception as e:  # noqa: BLE001 -- any error is a failed run, reported, then torn down
        t.failures.append(f"{type(e).__name__}: {e}")
        log(f"\nERROR: {type(e).__name__}: {e}")
    except KeyboardInterrupt as e:
        t.failures.append(f"interrupted ({e})")
    finally:
        t.p.stop_all()
        delete_namespaces()
        if not ok:
            t.p.dump_logs()
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"failures": t.failures, "results": t.results}, f, indent=1, default=str)
        if not (keep or not ok):
            shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - started
    if t.failures:
        log(f"\ntopology test FAILED in {took:.0f} s ({len(t.failures)} failure(s)); logs in {workdir}:")
        for f in t.failures:
            log(f"  - {f}")
        return 1
    log(f"\ntopology test passed in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
