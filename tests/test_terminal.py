#!/usr/bin/env python3
"""The live progress block on a real terminal (a tmux pane, whose screen and scrollback are what a
user sees): a pipeline that logs while it runs (the trainer's step lines) and at its end ("saved
the SAE") must leave every log line intact and once, in order, above one final progress block,
then the summary. Before the logger knew of the block, redraws wrote over log lines and log lines
broke the block. Also: when a stage fails to start, the cause is logged before what the other
stages say as they stop ("no activations arrived"). Usage: test_terminal.py SAEFLOW"""
import os, re, shutil, subprocess, sys, tempfile, time

saeflow = os.path.abspath(sys.argv[1])
tmp = tempfile.mkdtemp(prefix="sf-term-")
failures = 0
STEPS, EVERY = 30, 3  # 120 messages x 64 rows / batch 256; a step line every 3 steps


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


FLOW = """
stage gen = tensor_gen {
    count = 120
    rows = 64
    cols = 32
    seed = 5
    delay_us = 30000
}
stage sae = sae_trainer {
    input = gen
    field = tensor
    out_dir = "%s/sae"
    latents = 128
    k = 8
    batch = 256
    warmup_steps = 2
    metrics_every = %d
    checkpoint_every = 0
}
""" % (tmp, EVERY)

# 1. Failed start: the cause first. (No terminal needed.) A failure `saeflow check` cannot see
# before the run (that would stop it with exit 2 before anything starts): the trainer's out_dir
# below a regular file, which only its start finds.
bad = os.path.join(tmp, "bad.flow")
blocker = os.path.join(tmp, "a-file")
open(blocker, "w").close()
with open(bad, "w") as f:
    f.write(FLOW.replace('out_dir = "%s/sae"' % tmp, 'out_dir = "%s/sae"' % blocker))
r = subprocess.run([saeflow, "run", bad, "--no-progress"], capture_output=True, text=True, timeout=60)
lines = r.stderr.splitlines()
cause = next((i for i, l in enumerate(lines) if "error: sae:" in l), None)
after = next((i for i, l in enumerate(lines) if "no activations arrived" in l), None)
check(r.returncode == 1 and cause is not None and (after is None or cause < after),
      f"failed start: the cause is logged first (line {cause}, 'no activations arrived' at {after})\n{r.stderr}")

# 2. The live block in a tmux pane.
if not shutil.which("tmux"):
    print("tmux not installed (tools/install-deps.sh installs it): skipped")
    sys.exit(77 if failures == 0 else 1)
flow = os.path.join(tmp, "live.flow")
with open(flow, "w") as f:
    f.write(FLOW)
sock = f"sf-term-{os.getpid()}"
tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
done = os.path.join(tmp, "exit")
cmd = f"{saeflow} run {flow} --progress; echo $? > {done}.tmp; mv {done}.tmp {done}; sleep 600"
subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "50", "sh", "-c", cmd], check=True)
try:
    subprocess.run([*tmux, "set-option", "-g", "history-limit", "10000"], check=True)
    end = time.time() + 120
    while not os.path.exists(done) and time.time() < end:
        time.sleep(0.2)
    screen = subprocess.run([*tmux, "capture-pane", "-p", "-J", "-S", "-10000"], capture_output=True, text=True,
                            check=True).stdout
finally:
    subprocess.run([*tmux, "kill-server"], capture_output=True)
code = open(done).read().strip() if os.path.exists(done) else "timeout"
rows = [l.rstrip() for l in screen.splitlines() if l.strip()]
check(code == "0", f"the run in the pane exits 0 (got {code})")

log = re.compile(r"^\d\d:\d\d:\d\d (\[[\w\[\]]+\] )?(debug|info|warn|error): ")
logged = [l for l in rows if log.match(l)]
step_lines = [l for l in rows if re.search(r"\[sae\] info: step \d+: loss", l)]
want = list(range(EVERY, STEPS + 1, EVERY))
got = [int(re.search(r"step (\d+):", l).group(1)) for l in step_lines]
check(got == want, f"every step line once, in order: {got}")
check(all(log.match(l) and l.endswith("tokens/s") for l in step_lines), "step lines are whole, nothing drawn into them")
saved = [i for i, l in enumerate(rows) if "[sae] info: saved the SAE" in l]
check(len(saved) == 1, "the last log line ('saved the SAE') is on the screen")
block = [i for i, l in enumerate(rows) if re.match(r"^(gen|sae) +in +\d+ +out +\d+ +queue", l)]
summary = [i for i, l in enumerate(rows) if l.startswith("saeflow: run summary")]
check(len(block) == 2 and bool(summary) and saved and saved[0] < block[0] < block[1] < summary[0],
      f"one progress block (lines {block}), below the last log line ({saved}), above the summary ({summary})")
final = rows[block[0]] if block else ""
check(bool(re.match(r"^gen +in +0 +out +120 ", final)), f"the block shows the final counts: {final!r}")
stray = [l for l in rows if "\x1b" in l or (not log.match(l) and re.search(r"\d\d:\d\d:\d\d .*(info|warn):", l))]
check(not stray and len(logged) >= len(want) + 1, f"no garbled lines {stray[:3]}")
if failures:
    print(screen)
print(f"{failures} failures")
sys.exit(1 if failures else 0)
