#!/usr/bin/env python3
"""Pipelines across real hosts: three Linux network namespaces joined by veth pairs to a bridge
(in a fourth, private namespace) on a test subnet 10.231.0.0/24 made here, running
pipelines/three-hosts.flow across them.
  1. totals (shard manifest counts, the multiset of stored activation rows, SAE tokens) equal a
     one-process run of the same pipeline exactly;
  2. clients without the CURVE key (a pyzmq DEALER with its own keypair, one with no CURVE, and a
     saeflow host with a different keypair) are refused: they get no data, inject nothing, and
     the run still ends with exact totals;
  3. SIGINT to host A only stops every host as interrupted (exit 130): C's shard manifest is not
     marked complete, its trainer saves a checkpoint;
  4. killing forward replica fwd[1]'s process mid-run ends every host with an error naming it, the
     trainer's checkpoint exists, and a re-run with resume=true logs that the trainer resumes and
     ends with an uninterrupted run's totals: shard rows exactly (multiset compared), manifest
     counts, the trainer's token count (which rows the trainer skips is its own business: with two
     replicas their order differs between runs);
  5. saeflow launch (with SAEFLOW_SSH pointing at a stand-in for ssh that enters the namespace);
     Ctrl-C (SIGINT) to the launcher: it names the hosts it waits for, returns only after every
     part has exited (no saeflow left in any namespace), reports each one's exit (130) and exits
     130; the parts stopped cleanly (checkpoint saved, shards not marked complete);
  6. saeflow launch over real OpenSSH (an sshd per namespace; skipped without openssh-server):
     Ctrl-C to the launcher (the same checks), and a lost ssh session, both stop the parts cleanly.
Usage: test_hosts.py SAEFLOW SOURCE_ROOT. Skips (77) without root or iproute2, or when any step of
the network setup fails (after removing what it made)."""
import glob, hashlib, json, os, shutil, signal, struct, subprocess, sys, tempfile, time

saeflow, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
FLOW = os.path.join(root, "pipelines", "three-hosts.flow")
failures = 0


def skip(why):
    print("SKIP: " + why, flush=True)
    sys.exit(77)


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


if os.geteuid() != 0:
    skip("network namespaces need root (ip netns)")
if not shutil.which("ip"):
    skip("no 'ip' command (Debian package iproute2)")
for f in ("data/suite/tokenizer.model", "data/suite/step-001000/model.safetensors", "data/corpus/debian-docs.jsonl.gz"):
    if not os.path.exists(os.path.join(root, f)):
        skip(f"missing {f}")

tag = str(os.getpid() % 100000)
HOSTS = {"A": "10.231.0.1", "B": "10.231.0.2", "C": "10.231.0.3"}
NS = {h: f"sf{tag}{h.lower()}" for h in HOSTS}
SWITCH = f"sf{tag}sw"
procs = []


def sh(*args, check_rc=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def cleanup(*_):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for ns in list(NS.values()) + [SWITCH]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
try:  # any step of the network setup failing (no netns, no veth or bridge support) is a skip
    sh("ip", "netns", "add", SWITCH)
    sh("ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", SWITCH, "link", "set", "br0", "up")
    for h, addr in HOSTS.items():
        ns = NS[h]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{h}", "netns", SWITCH)
        sh("ip", "-n", SWITCH, "link", "set", f"p{h}", "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
except (RuntimeError, OSError) as e:
    cleanup()
    skip(f"cannot set up the test network (namespaces, veth pairs, a bridge) here: {e}")

tmp = tempfile.mkdtemp(prefix="sf-hosts-")
try:
    r = sh("ip", "netns", "exec", NS["A"], "ping", "-c", "1", "-W", "3", HOSTS["C"], check_rc=False) if shutil.which("ping") else None
    if r is not None:
        check(r.returncode == 0, "host A reaches host C over the test bridge")

    keys, wrong = os.path.join(tmp, "keys"), os.path.join(tmp, "wrong")
    for d in (keys, wrong):
        sh(saeflow, "keygen", d)
    check(oct(os.stat(os.path.join(keys, "secret.key")).st_mode & 0o777) == "0o600", "keygen writes the secret key with mode 600")
    check(sh(saeflow, "keygen", keys, check_rc=False).returncode != 0, "keygen refuses to overwrite a keypair")

    DOCS = os.environ.get("SF_HOSTS_DOCS", "150")
    env = dict(os.environ, SAEFLOW_LOG="info")

    def vars_for(run_dir, docs=DOCS, key_dir=keys):
        os.makedirs(run_dir, exist_ok=True)
        return [f"addr_a={HOSTS['A']}", f"addr_b={HOSTS['B']}", f"addr_c={HOSTS['C']}", f"docs={docs}",
                f"keys={key_dir}", f"runs={run_dir}"]

    def start(host, run_dir, docs=DOCS, key_dir=keys, extra=()):
        args = ["ip", "netns", "exec", NS[host], saeflow, "run", FLOW, "--host", host, "--no-progress",
                "--connect-timeout", "20", "--peer-timeout", "3", *vars_for(run_dir, docs, key_dir), *extra]
        p = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        return p

    def finish(p, timeout=180):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(timed out)"
        return p.returncode, err

    def safetensors_rows(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        rows = []
        for name, t in header.items():
            if name == "__metadata__" or t["dtype"] not in ("F32", "F16", "BF16") or len(t["shape"]) != 2:
                continue
            a, b = t["data_offsets"]
            width = (b - a) // t["shape"][0] if t["shape"][0] else 0
            rows += [data[a + i * width: a + (i + 1) * width] for i in range(t["shape"][0])]
        return rows

    def totals(run_dir, err):
        """Order-independent totals of a run: manifest counts, a digest of the sorted row hashes, SAE tokens."""
        m = json.load(open(os.path.join(run_dir, "shards", "manifest.json")))
        hashes = sorted(hashlib.sha1(r).digest() for f in sorted(glob.glob(os.path.join(run_dir, "shards", "*.safetensors")))
                        for r in safetensors_rows(f))
        sae = json.load(open(os.path.join(run_dir, "sae", "config.json"))) if os.path.exists(os.path.join(run_dir, "sae", "config.json")) else {}
        trained = tail = None
        for line in err.splitlines():
            if "saved the SAE" in line and "tokens" in line:
                trained = int(line.split(" steps, ")[1].split(" tokens")[0])
            if "sae: untrained_tail_tokens =" in line:
                tail = int(line.split("=")[1])
        return {"count": m.get("count"), "sequences": m.get("sequences"), "complete": m.get("complete"),
                "rows": len(hashes), "row_digest": hashlib.sha1(b"".join(hashes)).hexdigest(),
                "sae_tokens": trained, "sae_tail": tail, "sae_d": sae.get("d_in")}

    # --- 1. one process vs three hosts --------------------------------------------------------
    one = os.path.join(tmp, "one")
    t0 = time.time()
    r = subprocess.run([saeflow, "run", FLOW, "--host", "A", "--no-progress", "on_b=A", "on_c=A", *vars_for(one)],
                       cwd=root, capture_output=True, text=True, env=env, timeout=300)
    check(r.returncode == 0, f"one-process run of three-hosts.flow succeeds ({time.time() - t0:.1f} s)")
    if r.returncode:
        print(r.stderr[-3000:])
    ref = totals(one, r.stderr)
    print("     one process:", ref)
    check(ref["count"] and ref["count"] == ref["rows"] and ref["complete"], "one-process shards are complete and hold every row")

    three = os.path.join(tmp, "three")
    t0 = time.time()
    pc, pb = start("C", three), start("B", three)
    time.sleep(0.5)
    pa = start("A", three)
    (ra, ea), (rb, eb), (rc, ec) = finish(pa), finish(pb), finish(pc)
    check(ra == rb == rc == 0, f"three hosts all succeed ({time.time() - t0:.1f} s; exit codes {ra} {rb} {rc})")
    if ra or rb or rc:
        print("A:", ea[-2000:], "\nB:", eb[-2000:], "\nC:", ec[-2000:])
    got = totals(three, ec)
    print("     three hosts:", got)
    for k in ("count", "sequences", "rows", "row_digest", "sae_tokens", "sae_tail"):
        check(got[k] == ref[k], f"three hosts: {k} equals the one-process run ({got[k]} vs {ref[k]})")
    check("fwd[1]" in eb and "edge tok -> fwd[1]" in eb, "host B ran forward replica fwd[1] over tcp")
    check("refused" not in ea + eb + ec, "no legitimate connection was refused")

    # --- 2. peers without the key ------------------------------------------------------------
    intruder = os.path.join(tmp, "intruder.py")
    with open(intruder, "w") as f:
        f.write(r'''
import struct, sys, time, zmq
addr, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ctx = zmq.Context()
socks = []
for port in range(int(sys.argv[4]), int(sys.argv[4]) + 6):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, b"fwd[1]" if port == int(sys.argv[4]) + 1 else b"sae")
    if mode in ("curve", "member"):              # its own keypair (or the cluster's), the real server key
        server = open(sys.argv[5] + "/public.key", "rb").read().strip()
        pub, sec = zmq.curve_keypair() if mode == "curve" else (server, open(sys.argv[5] + "/secret.key", "rb").read().strip())
        s.curve_publickey, s.curve_secretkey = pub, sec
        s.curve_serverkey = server
    s.connect(f"tcp://{addr}:{port}")
    hello = struct.pack("<IIQ", 0x53460001, 1000, 0)
    abort = struct.pack("<IIQ", 0x53460005, 0, 0)
    socks.append((s, hello, abort))
got = 0
end = time.time() + seconds
while time.time() < end:
    for s, hello, abort in socks:
        try:
            s.send(hello, zmq.NOBLOCK)
            if mode != "member":  # the control only listens, to show it would get data
                s.send_multipart([abort, b"intruder says stop"], zmq.NOBLOCK)
        except zmq.Again:
            pass
        while True:
            try:
                s.recv(zmq.NOBLOCK)
                got += 1
            except zmq.Again:
                break
    time.sleep(0.2)
print(got)
''')
    sec_run = os.path.join(tmp, "secure")
    pc, pb = start("C", sec_run), start("B", sec_run)
    pa = start("A", sec_run)
    port = 47300
    py = "/usr/bin/python3"
    spies = [subprocess.Popen(["ip", "netns", "exec", NS["C"], py, intruder, HOSTS["A"], mode, "6", str(port), keys],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode in ("curve", "plain")]
    spy_out = [s.communicate(timeout=60) for s in spies]
    (ra, ea), (rb, eb), (rc, ec) = finish(pa), finish(pb), finish(pc)
    for mode, (out, err) in zip(("own CURVE keypair", "no CURVE"), spy_out):
        check(out.strip() == "0", f"a DEALER with {mode} receives nothing from host A (got {out.strip() or err[-300:]})")
    check(ra == rb == rc == 0, f"the run ignores the intruders' HELLO/ABORT frames (exit codes {ra} {rb} {rc})")
    check("refused a connection from 10.231.0.3" in ea, "host A logs the refused CURVE client with its address")
    if ra == rb == rc == 0:
        got = totals(sec_run, ec)
        check(got["row_digest"] == ref["row_digest"] and got["count"] == ref["count"],
              "with intruders, the totals still equal the one-process run")

    # control: the same intruder holding the cluster keypair, with only host A running, is served
    ctl_run = os.path.join(tmp, "control")
    pa = start("A", ctl_run, extra=["--connect-timeout", "5"])
    spy = subprocess.run(["ip", "netns", "exec", NS["C"], py, intruder, HOSTS["A"], "member", "4", str(port), keys],
                         capture_output=True, text=True, timeout=60)
    finish(pa, 60)
    check(spy.stdout.strip().isdigit() and int(spy.stdout) > 0,
          f"control: a DEALER holding the cluster key is served by host A ({spy.stdout.strip() or spy.stderr[-300:]} frames)")

    wrong_run = os.path.join(tmp, "wrongkey")
    t0 = time.time()
    pc, pa = start("C", wrong_run, extra=["--connect-timeout", "6"]), start("A", wrong_run, extra=["--connect-timeout", "6"])
    pb = start("B", wrong_run, key_dir=wrong, extra=["--connect-timeout", "6"])
    (ra, ea), (rb, eb), (rc, ec) = finish(pa, 60), finish(pb, 60), finish(pc, 60)
    check(ra != 0 and rc != 0 and rb != 0, f"a host with another keypair cannot join: every part fails (exit codes {ra} {rb} {rc}, {time.time() - t0:.0f} s)")
    check("fwd[1]" in ea and ("has not connected" in ea or "never heard" in ea), "host A's error names the missing consumer fwd[1]")
    last = eb.split("error:")[-1]
    check("has not connected" in last or "never heard" in last, "host B's error names a peer it could never reach: " + last.strip()[:120])
    m = os.path.join(wrong_run, "shards", "manifest.json")
    check(not os.path.exists(m) or not json.load(open(m)).get("complete"), "no complete shard set claims the failed run")

    bad = os.path.join(tmp, "badkeys")
    os.makedirs(bad)
    open(os.path.join(bad, "public.key"), "w").write("not a key\n")
    shutil.copy(os.path.join(keys, "secret.key"), bad)
    r = subprocess.run([saeflow, "run", FLOW, "--host", "C", *vars_for(os.path.join(tmp, "bad"), key_dir=bad)], cwd=root,
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "public.key is not a CURVE key" in r.stderr, "a malformed public.key is a clear error")
    os.chmod(os.path.join(bad, "secret.key"), 0o644)
    shutil.copy(os.path.join(keys, "public.key"), bad)
    r = subprocess.run([saeflow, "run", FLOW, "--host", "C", *vars_for(os.path.join(tmp, "bad"), key_dir=bad)], cwd=root,
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "chmod 600" in r.stderr, "a secret key readable by others is refused")
    r = subprocess.run([saeflow, "run", FLOW, "--host", "C", *vars_for(os.path.join(tmp, "bad"), key_dir=os.path.join(tmp, "none"))],
                       cwd=root, capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "saeflow keygen" in r.stderr, "a missing key directory says how to make one")

    # --- 3. SIGINT to host A only: the interrupt reaches B and C through the end-of-stream -------
    KILL_DOCS = "1500"
    int_run = os.path.join(tmp, "interrupt")
    # 64 sequences a document: host A's tokenizer is still producing when it is signalled (with
    # 4, its whole output fits in the links' credit and small-message allowance, so it may have
    # ended its stream normally before the signal, and B's replica then finishes whole, exit 0)
    long_tok = ["seqs_per_doc=64"]
    pc, pb = start("C", int_run, docs=KILL_DOCS, extra=long_tok), start("B", int_run, docs=KILL_DOCS, extra=long_tok)
    pa = start("A", int_run, docs=KILL_DOCS, extra=long_tok)
    time.sleep(3)
    alive = all(p.poll() is None for p in (pa, pb, pc))
    pa.send_signal(signal.SIGINT)  # 'ip netns exec' exec'd saeflow: this is host A's process
    (ra, ea), (rb, eb), (rc, ec) = finish(pa, 120), finish(pb, 120), finish(pc, 120)
    check(alive and ra == rb == rc == 130, f"SIGINT to host A only: every host stops as interrupted (exit codes {ra} {rb} {rc}; running when signalled: {alive})")
    check("interrupted upstream" in ec and "interrupted upstream" in eb, "hosts B and C say they were interrupted upstream")
    m = os.path.join(int_run, "shards", "manifest.json")
    check(os.path.exists(m) and not json.load(open(m)).get("complete"), "host C's shard manifest is written but not marked complete")
    check(os.path.exists(os.path.join(int_run, "sae", "checkpoint.safetensors")) and "(interrupted: resume=true continues)" in ec,
          "the trainer on C saved a checkpoint and says the run was interrupted")
    if ra != 130 or rc != 130:
        print("A:", ea[-1500:], "\nC:", ec[-1500:])

    # --- 4. kill forward replica fwd[1] mid-run -------------------------------------------------
    kill_run = os.path.join(tmp, "kill")
    pc, pb = start("C", kill_run, docs=KILL_DOCS), start("B", kill_run, docs=KILL_DOCS)
    pa = start("A", kill_run, docs=KILL_DOCS)
    time.sleep(3)
    alive = pb.poll() is None
    pb.kill()  # SIGKILL to 'ip netns exec', which exec'd saeflow: the replica's process itself
    t0 = time.time()
    (ra, ea), (rc, ec) = finish(pa, 120), finish(pc, 120)
    finish(pb)
    check(alive, "host B was still running when killed")
    check(ra != 0 and rc != 0, f"after fwd[1] dies, hosts A and C fail (exit codes {ra} {rc}, {time.time() - t0:.1f} s)")
    check("error:" in ea and "fwd[1]" in ea.split("error:")[-1], "host A's error names fwd[1]")
    check("error:" in ec and "fwd[1]" in ec.split("error:")[-1], "host C's error names fwd[1]")
    m = os.path.join(kill_run, "shards", "manifest.json")
    check(not os.path.exists(m) or not json.load(open(m)).get("complete"), "the killed run's shards are not marked complete")
    check(os.path.exists(os.path.join(kill_run, "sae", "checkpoint.safetensors")), "the trainer on C saved its checkpoint after the failure")
    if failures:
        print("A:", ea[-1500:], "\nC:", ec[-1500:])

    # a re-run resumes (shards skip the sequences they hold, the SAE continues from its checkpoint)
    # and ends with the totals of an uninterrupted run: nothing acknowledged was lost or counted twice
    full = os.path.join(tmp, "full")
    r = subprocess.run([saeflow, "run", FLOW, "--host", "A", "--no-progress", "on_b=A", "on_c=A", *vars_for(full, KILL_DOCS)],
                       cwd=root, capture_output=True, text=True, env=env, timeout=300)
    full_totals = totals(full, r.stderr) if r.returncode == 0 else {}
    procs_again = [start(h, kill_run, docs=KILL_DOCS, extra=["resume=true"]) for h in ("C", "B", "A")]
    results = [finish(p) for p in procs_again]
    check(all(rc == 0 for rc, _ in results), f"the re-run after the kill succeeds (exit codes {[rc for rc, _ in results]})")
    resumed = totals(kill_run, results[0][1])
    print("     uninterrupted:", full_totals, "\n     killed + resumed:", resumed)
    check("skipped_sequences = 0" not in results[0][1], "the re-run resumed the shard directory (skipped what it held)")
    resuming = [l for l in results[0][1].splitlines() if "[sae]" in l and "resuming" in l]
    check(bool(resuming), f"the trainer on C resumes from its checkpoint: {resuming[0].strip() if resuming else '(no resume line)'}")
    for k in ("count", "sequences", "rows", "row_digest", "sae_tokens"):
        check(resumed.get(k) == full_totals.get(k), f"killed + resumed: {k} equals an uninterrupted run ({resumed.get(k)} vs {full_totals.get(k)})")

    # --- 5. saeflow launch through a stand-in for ssh -----------------------------------------
    fake_ssh = os.path.join(tmp, "fake-ssh")
    with open(fake_ssh, "w") as f:
        f.write("#!/bin/sh\n# fake-ssh ADDR COMMAND: runs COMMAND in the namespace that owns ADDR\naddr=$1; shift\ncase $addr in\n")
        for h, a in HOSTS.items():
            f.write(f"  {a}) ns={NS[h]};;\n")
        f.write("  *) echo \"fake-ssh: unknown $addr\" >&2; exit 255;;\nesac\nexec ip netns exec $ns sh -c \"$*\"\n")
    os.chmod(fake_ssh, 0o755)
    launch_run = os.path.join(tmp, "launch")
    lenv = dict(env, SAEFLOW_SSH=fake_ssh, SAEFLOW_BIN=saeflow)
    r = subprocess.run([saeflow, "launch", FLOW, *vars_for(launch_run)], cwd=root, capture_output=True, text=True, env=lenv, timeout=300)
    check(r.returncode == 0, f"saeflow launch runs all three hosts (exit {r.returncode})")
    check(all(f"[{h}] " in r.stdout + r.stderr for h in HOSTS), "launch prefixes each host's log lines with its name")
    if r.returncode == 0:
        got = totals(launch_run, r.stderr)
        check(got["row_digest"] == ref["row_digest"], "launch totals equal the one-process run")
    else:
        print(r.stderr[-2500:])
    r = subprocess.run([saeflow, "launch", FLOW, *vars_for(os.path.join(tmp, "launch2")), "step=missing-step"],
                       cwd=root, capture_output=True, text=True, env=lenv, timeout=120)
    check(r.returncode != 0 and "failed" in r.stderr, f"launch fails when a host's part fails (exit {r.returncode})")

    def saeflow_in(host):
        """The saeflow processes running in host's namespace."""
        found = []
        for q in sh("ip", "netns", "pids", NS[host]).stdout.split():
            try:
                found += [q] if "saeflow" in open(f"/proc/{q}/cmdline").read() else []
            except OSError:
                pass  # exited meanwhile
        return found

    def stopped_cleanly(run_dir):
        m = os.path.join(run_dir, "shards", "manifest.json")
        return (os.path.exists(os.path.join(run_dir, "sae", "checkpoint.safetensors")) and os.path.exists(m)
                and not json.load(open(m)).get("complete"))

    def wait_mid_run(run_dir, timeout=120):
        """Until host C's shard manifest lists a finished shard (8 MiB, about 11k rows): the SAE
        trainer beside it, fed the same stream, has then trained on at least one batch, so an
        interrupt finds both mid-run under any load (a fixed sleep did not, on a loaded machine)."""
        m, t0 = os.path.join(run_dir, "shards", "manifest.json"), time.time()
        while time.time() - t0 < timeout:
            try:
                if json.load(open(m)).get("shards"):
                    return
            except (OSError, ValueError):
                pass  # not written yet, or replaced meanwhile
            time.sleep(0.2)

    def check_ctrl_c(p, run_dir, how):
        """SIGINT to a running launcher: it waits for every part and reports each, then exits 130."""
        running = p.poll() is None
        p.send_signal(signal.SIGINT)
        rc, err = finish(p, 120)
        left = {h: saeflow_in(h) for h in HOSTS}  # at once: the launcher returned, so every part has exited
        lines = err.splitlines()
        waiting = next((l for l in lines if "interrupted: stopping every host, waiting for" in l), "")
        exited = {h: next((i for i, l in enumerate(lines) if l.startswith(f"saeflow launch: host {h} exited with 130")), None)
                  for h in HOSTS}
        last = next((i for i, l in enumerate(lines) if l.startswith("saeflow launch: failed")), None)
        check(running and rc == 130 and all(h in waiting for h in HOSTS),
              f"launch {how}, Ctrl-C: the launcher exits 130 naming the hosts it waits for (exit {rc}: {waiting!r})")
        check(all(i is not None for i in exited.values()) and last is not None and all(i < last for i in exited.values()),
              f"launch {how}, Ctrl-C: each host's exit (130) is reported before the launcher ends ({exited}, end at {last})")
        check(not any(left.values()), f"launch {how}, Ctrl-C: no part is left running in any namespace ({left})")
        check(stopped_cleanly(run_dir), f"launch {how}, Ctrl-C: host C's checkpoint is saved, its shards not marked complete")
        if rc != 130 or any(left.values()) or not stopped_cleanly(run_dir):
            print(err[-3000:])
        return err

    # Ctrl-C to the launcher (the fake ssh execs saeflow in the namespace: the part is the child)
    int_run = os.path.join(tmp, "launch-int")
    p = subprocess.Popen([saeflow, "launch", FLOW, *vars_for(int_run, KILL_DOCS)], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=lenv)
    procs.append(p)
    wait_mid_run(int_run)
    check_ctrl_c(p, int_run, "through the stand-in ssh")

    # --- 6. saeflow launch over real OpenSSH (an sshd in every namespace) ------------------------
    # The launcher runs in host A's namespace, as on a login node that is also host A.
    if not os.path.exists("/usr/sbin/sshd") or not shutil.which("ssh"):
        print("SKIP launch over real OpenSSH: no /usr/sbin/sshd or ssh (Debian packages openssh-server, openssh-client)", flush=True)
    else:
        sshdir = os.path.join(tmp, "ssh")
        os.makedirs(sshdir)
        os.makedirs("/run/sshd", exist_ok=True)
        for k in ("hostkey", "id"):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(sshdir, k))
        shutil.copy(os.path.join(sshdir, "id.pub"), os.path.join(sshdir, "authorized_keys"))
        for h, a in HOSTS.items():
            conf = os.path.join(sshdir, f"sshd_{h}")
            with open(conf, "w") as f:
                f.write(f"ListenAddress {a}:22\nHostKey {sshdir}/hostkey\nAuthorizedKeysFile {sshdir}/authorized_keys\n"
                        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                        f"UsePAM no\nStrictModes no\nPidFile {sshdir}/sshd_{h}.pid\n")
            procs.append(subprocess.Popen(["ip", "netns", "exec", NS[h], "/usr/sbin/sshd", "-D", "-e", "-f", conf],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        ssh_cmd = (f"ssh -i {sshdir}/id -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                   "-o LogLevel=ERROR -o ConnectTimeout=5")
        senv = dict(env, SAEFLOW_SSH=ssh_cmd, SAEFLOW_BIN=saeflow)
        time.sleep(1)

        def launch(run_dir):
            p = subprocess.Popen(["ip", "netns", "exec", NS["A"], saeflow, "launch", FLOW, *vars_for(run_dir, KILL_DOCS)],
                                 cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=senv)
            procs.append(p)
            return p

        # Ctrl-C to the launcher: it closes every part's stdin, ssh forwards the end-of-file, each
        # part drains and finishes, and their logs still arrive.
        ssh_run = os.path.join(tmp, "ssh-int")
        p = launch(ssh_run)
        wait_mid_run(ssh_run)
        err = check_ctrl_c(p, ssh_run, "over OpenSSH")
        check("[C] " in err and "standard input closed" in err and "(interrupted: resume=true continues)" in err,
              "the parts log through ssh that they stop, and the trainer's interrupted save arrives")

        # a lost session: SIGKILL to host C's ssh client; sshd closes the part's stdin (and its log
        # pipe), and the part stops cleanly instead of dying of SIGPIPE or running on
        ssh_run = os.path.join(tmp, "ssh-lost")
        p = launch(ssh_run)
        wait_mid_run(ssh_run)
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        # C's ssh client: its destination argument is C's address (every part's command line names
        # addr_c=..., so a substring match would pick host A's client)
        c_ssh = [k for k in kids if HOSTS["C"] in open(f"/proc/{k}/cmdline").read().split("\0")]
        if c_ssh:
            os.kill(int(c_ssh[0]), signal.SIGKILL)
        rc, err = finish(p, 120)
        left, t0 = saeflow_in("C"), time.time()
        while left and time.time() - t0 < 30:  # the orphaned part may still be draining
            time.sleep(0.5)
            left = saeflow_in("C")
        check(bool(c_ssh) and rc != 0 and not left, f"lost ssh session of host C: the launcher fails (exit {rc}), the part on C ends by itself ({left})")
        check(stopped_cleanly(ssh_run), "the part on C stopped cleanly: checkpoint saved, shard manifest not marked complete")
finally:
    cleanup()
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept", tmp)

print(f"{failures} failures" if failures else "all host checks passed")
sys.exit(1 if failures else 0)
