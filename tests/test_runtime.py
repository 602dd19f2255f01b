#!/usr/bin/env python3
"""The runtime, end to end with real processes: broadcast and shared edges, several processes over
tcp and ipc, 100k+ messages with none lost or repeated, a slow consumer with bounded memory,
failures, signals and vanished peers. Usage: test_runtime.py SAEFLOW [--heavy]"""
import os, random, resource, signal, subprocess, sys, tempfile, time

saeflow = sys.argv[1]
heavy = "--heavy" in sys.argv
tmp = tempfile.mkdtemp(prefix="sf-rt-")
failures = 0
N = 200_000 if heavy else 100_000


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def write(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def run(args, timeout=300, **kw):
    return subprocess.run([saeflow, "run", *args], capture_output=True, text=True, timeout=timeout, **kw)


def report_totals(path):
    count = seqsum = 0
    for line in open(path):
        _, c, s = line.split()
        count += int(c)
        seqsum += int(s)
    return count, seqsum


def two_hosts(flow, env=None, kill_b_after=None, timeout=300):
    """Starts host b (consumers) then host a (producers); returns (proc_a result, proc_b result, maxrss KB of children)."""
    b = subprocess.Popen([saeflow, "run", flow, "--host", "b", "--peer-timeout", "3", "--connect-timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    a = subprocess.Popen([saeflow, "run", flow, "--host", "a", "--peer-timeout", "3", "--connect-timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_b_after is not None:
        time.sleep(kill_b_after)
        b.kill()
    ea = a.communicate(timeout=timeout)[1]
    eb = b.communicate(timeout=timeout)[1]
    return a.returncode, ea, b.returncode, eb


# 1. One process: replicated producer, shared relay replicas, a broadcast pair of sinks.
rep = os.path.join(tmp, "single.txt")
flow = write("single.flow", f"""
stage gen = tensor_gen {{
    count = {N}
    rows = 2
    cols = 8
    replicas = 2
}}
stage mid = relay {{
    input = gen
    replicas = 2
}}
stage all = verify_sink {{
    input = mid
    expect = {N}
}}
stage each = verify_sink {{
    input = mid
    replicas = 2
    distribute = broadcast
    expect = {N}
    report = {rep}
}}
""")
t0 = time.time()
r = run([flow, "--no-progress"])
check(r.returncode == 0, f"single process, {N} messages through shared relays into 3 sinks ({time.time() - t0:.1f} s) {r.stderr[-300:] if r.returncode else ''}")
if os.path.exists(rep):
    check(report_totals(rep) == (2 * N, 2 * (N * (N - 1) // 2)), "broadcast: both replicas saw every message")
check("edge mid[0] -> all" in r.stderr and "end-of-stream sent" in r.stderr, "run summary lists the edges")

# 2./3. Two processes over tcp and over ipc: exact totals on shared and single sinks.
for transport in ("tcp", "ipc"):
    port = random.randrange(20000, 60000, 100)
    rep = os.path.join(tmp, f"{transport}.txt")
    if transport == "tcp":
        ha, hb = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 50}"
    else:
        os.makedirs(os.path.join(tmp, "ipc-a"), exist_ok=True)
        os.makedirs(os.path.join(tmp, "ipc-b"), exist_ok=True)
        ha, hb = "ipc://" + os.path.join(tmp, "ipc-a"), "ipc://" + os.path.join(tmp, "ipc-b")
    flow = write(f"{transport}.flow", f"""
host a = {ha}
host b = {hb}
stage gen = tensor_gen {{
    host = a
    count = {N}
    rows = 4
    cols = 16
}}
stage one = verify_sink {{
    host = b
    input = gen
    expect = {N}
}}
stage shared = verify_sink {{
    host = b
    input = gen
    replicas = 3
    report = {rep}
}}
""")
    t0 = time.time()
    ca, ea, cb, eb = two_hosts(flow)
    ok = ca == 0 and cb == 0
    check(ok, f"{transport}: two processes, {N} messages, exit codes {ca}/{cb} ({time.time() - t0:.1f} s) {'' if ok else ea[-400:] + eb[-400:]}")
    if os.path.exists(rep):
        check(report_totals(rep) == (N, N * (N - 1) // 2), f"{transport}: shared replicas got every message exactly once")
    check("all verified in sequence" in eb, f"{transport}: consumer verified sequence numbers and end-of-stream counts")

# 4. A slow consumer of 1 MiB tensors: the producer slows down, memory stays bounded.
port = random.randrange(20000, 60000, 100)
count = 1500 if not heavy else 6000
flow = write("slow.flow", f"""
host a = tcp://127.0.0.1:{port}
host b = tcp://127.0.0.1:{port + 50}
stage gen = tensor_gen {{
    host = a
    count = {count}
    rows = 256
    cols = 1024
}}
stage sink = verify_sink {{
    host = b
    input = gen
    expect = {count}
    delay_us = 1000
}}
""")
t0 = time.time()
ca, ea, cb, eb = two_hosts(flow)
rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
check(ca == 0 and cb == 0, f"slow consumer: {count} x 1 MiB delivered ({time.time() - t0:.1f} s) {ea[-300:] if ca else ''}{eb[-300:] if cb else ''}")
# AddressSanitizer keeps freed memory in quarantine (256 MB by default): allow for it there.
rss_limit = 120 + (300 if "ASAN_OPTIONS" in os.environ else 0)
check(rss_mb < rss_limit, f"slow consumer: peak RSS of any process {rss_mb:.0f} MB for {count} MiB streamed (bounded by credit)")

# 5. A failing stage stops the pipeline with its error, in one process and across processes.
flow = write("fail1.flow", """
stage gen = tensor_gen {
    count = 100000000
}
stage sink = verify_sink {
    input = gen
    fail_at = 500
}
""")
r = run([flow, "--no-progress"], timeout=60)
check(r.returncode == 1 and "sink: failing on seq 500" in r.stderr, f"failing stage: exit {r.returncode}, error names the stage")
port = random.randrange(20000, 60000, 100)
flow = write("fail2.flow", f"""
host a = tcp://127.0.0.1:{port}
host b = tcp://127.0.0.1:{port + 50}
stage gen = tensor_gen {{
    host = a
    count = 100000000
}}
stage sink = verify_sink {{
    host = b
    input = gen
    fail_at = 500
}}
""")
ca, ea, cb, eb = two_hosts(flow, timeout=60)
check(cb == 1 and ca == 1 and "sink (downstream) failed" in ea, f"failure across processes: producer stops naming the consumer (exit {ca}/{cb})")

# 6. SIGINT: sources stop, the pipeline drains, stages finish, exit 130.
rep = os.path.join(tmp, "sigint.txt")
flow = write("sigint.flow", f"""
stage gen = tensor_gen {{
    count = 1000000000
    delay_us = 100
}}
stage sink = verify_sink {{
    input = gen
    report = {rep}
}}
""")
p = subprocess.Popen([saeflow, "run", flow, "--no-progress"], stderr=subprocess.PIPE, text=True)
time.sleep(1.5)
p.send_signal(signal.SIGINT)
err = p.communicate(timeout=30)[1]
got = report_totals(rep)[0] if os.path.exists(rep) else -1
sent = [l for l in err.splitlines() if "edge gen -> sink" in l]
check(p.returncode == 130 and got > 0, f"SIGINT: exit {p.returncode}, sink finished after receiving {got}")
check(bool(sent) and f" {got} messages" in sent[0] and "end-of-stream sent" in sent[0], "SIGINT: everything sent was received (drained)")

# 7. A peer that never comes, and one that dies mid-run.
port = random.randrange(20000, 60000, 100)
flow = write("lonely.flow", f"""
host a = tcp://127.0.0.1:{port}
host b = tcp://127.0.0.1:{port + 50}
stage gen = tensor_gen {{
    host = a
}}
stage sink = verify_sink {{
    host = b
    input = gen
}}
""")
r = subprocess.run([saeflow, "run", flow, "--host", "a", "--connect-timeout", "2"], capture_output=True, text=True, timeout=30)
check(r.returncode == 1 and "consumer sink has not connected" in r.stderr, f"missing peer: clear error after the connect timeout (exit {r.returncode})")
port = random.randrange(20000, 60000, 100)
flow = write("dies.flow", f"""
host a = tcp://127.0.0.1:{port}
host b = tcp://127.0.0.1:{port + 50}
stage gen = tensor_gen {{
    host = a
    count = 100000000
}}
stage sink = verify_sink {{
    host = b
    input = gen
}}
""")
t0 = time.time()
ca, ea, cb, eb = two_hosts(flow, kill_b_after=1.5, timeout=60)
check(ca == 1 and "lost contact with consumer sink" in ea, f"peer killed mid-run: producer stops with an error naming it after {time.time() - t0:.1f} s (exit {ca}) {'' if 'lost contact' in ea else ea[-400:]}")

print(f"{failures} failures")
sys.exit(1 if failures else 0)
