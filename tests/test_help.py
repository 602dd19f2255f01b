#!/usr/bin/python3
"""Every subcommand answers --help (and -h): exit 0, a usage text on stdout, and nothing created.

Before this, `saeflow launch --help` read a pipeline file named --help and `saeflow keygen --help`
wrote a key pair into a directory named --help. The commands are read from `saeflow help` itself,
so a command added later is covered without touching this test.

usage: test_help.py SAEFLOW
"""
import os
import re
import subprocess
import sys
import tempfile

saeflow = os.path.abspath(sys.argv[1])
failures = []

listing = subprocess.run([saeflow, "help"], capture_output=True, text=True, timeout=30)
assert listing.returncode == 0, listing.stderr
commands = []
for line in listing.stdout.splitlines():
    m = re.match(r"\s+saeflow (\S+)(?: (\S+))?", line)
    if m and m.group(1) not in commands:
        commands.append(m.group(1))
# a command with subcommands (`sae info`, `shards inspect`, ...) answers --help after each of them too
subcommands = []
for line in listing.stdout.splitlines():
    m = re.match(r"\s+saeflow (\S+) ([a-z]+)(?: |$)", line)
    if m and m.group(1) not in ("run", "check", "launch", "stages", "keygen", "help", "version"):
        for sub in m.group(2).split("|"):
            subcommands.append([m.group(1), sub])
    m = re.match(r"\s+saeflow (\S+) [a-z]+ .*\| ([a-z]+) ", line)
    if m:
        subcommands.append([m.group(1), m.group(2)])
for required in ("run", "check", "launch", "stages", "keygen", "forward", "tokenize", "report", "sae"):
    if required not in commands:
        failures.append(f"`saeflow help` does not list {required}")

for argv in [[c] for c in commands if c not in ("help", "version")] + subcommands:
    for flag in ("--help", "-h"):
        with tempfile.TemporaryDirectory() as cwd:
            r = subprocess.run([saeflow, *argv, flag], capture_output=True, text=True, cwd=cwd,
                               stdin=subprocess.DEVNULL, timeout=30)
            what = "saeflow " + " ".join(argv + [flag])
            if r.returncode != 0:
                failures.append(f"{what}: exit {r.returncode}: {r.stderr.strip()[:200]}")
            elif "usage" not in r.stdout.lower():
                failures.append(f"{what}: no usage text on stdout: {r.stdout[:200]!r}")
            if os.listdir(cwd):
                failures.append(f"{what}: created {os.listdir(cwd)}")

print(f"{len(commands)} commands, {len(subcommands)} subcommands checked")
if failures:
    print("\n".join(failures))
    sys.exit(1)
print("ok")
