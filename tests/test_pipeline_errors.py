#!/usr/bin/env python3
"""Pipeline files: valid ones pass `saeflow check`; each class of bad file gets a file:line message
saying what is wrong. Usage: test_pipeline_errors.py SAEFLOW"""
import os, subprocess, sys, tempfile

saeflow = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="sf-parse-")
failures = 0

GOOD = """\
# a comment
set n = 10   # trailing comment
stage gen = tensor_gen {
    count = ${n}
    replicas = 2
}
stage sink = verify_sink {
    input = gen
    expect = "${n}"
    distribute = broadcast
}
"""

# (name, file text, expected line, expected words in the message, extra args)
BAD = [
    ("syntax", "stage gen = tensor_gen {\n  count = 1\n  what is this\n}\n", 3, "expected 'KEY"),
    ("unclosed", "stage gen = tensor_gen {\n  count = 1\n", 1, "not closed"),
    ("toplevel", "stagee gen = tensor_gen {\n}\n", 1, "expected 'stage'"),
    ("unknown-stage", "stage x = no_such_stage {\n}\n", 1, "unknown stage type 'no_such_stage'"),
    ("unknown-param", "stage gen = tensor_gen {\n  count = 1\n  colour = red\n}\n", 3, "has no parameter 'colour'; its parameters are: count, rows"),
    ("missing-param", "stage gen = tensor_gen {\n}\nstage o = zmq_out {\n  input = gen\n}\n", 3, "needs parameter 'endpoint'"),
    ("wrong-type", "stage gen = tensor_gen {\n  count = many\n}\n", 2, "must be int, not 'many'"),
    ("wrong-type-bool", "stage gen = tensor_gen {\n}\nstage o = zmq_out {\n input = gen\n endpoint = x\n bind = perhaps\n}\n", 6, "must be bool"),
    ("cycle", "stage gen = tensor_gen {\n}\nstage a = relay {\n  input = gen, c\n}\nstage b = relay {\n  input = a\n}\n"
              "stage c = relay {\n  input = b\n}\n", 7, "cycle"),
    ("self-cycle", "stage gen = tensor_gen {\n}\nstage a = relay {\n  input = gen, a\n}\n", 4, "cycle"),
    ("dangling-input", "stage gen = tensor_gen {\n}\nstage s = verify_sink {\n  input = gne\n}\n", 4, "reads from 'gne', which is not a stage"),
    ("sink-as-input", "stage gen = tensor_gen {\n}\nstage s = verify_sink {\n  input = gen\n}\nstage t = verify_sink {\n  input = s\n}\n", 7, "is a sink"),
    ("source-with-input", "stage gen = tensor_gen {\n}\nstage g2 = tensor_gen {\n  input = gen\n}\n", 4, "is a source and takes no input"),
    ("no-input", "stage s = verify_sink {\n}\n", 1, "takes 1 to 8 inputs, not 0"),
    ("duplicate-stage", "stage gen = tensor_gen {\n}\nstage gen = tensor_gen {\n}\n", 3, "defined twice"),
    ("duplicate-key", "stage gen = tensor_gen {\n count = 1\n count = 2\n}\n", 3, "set twice"),
    ("undefined-var", "stage gen = tensor_gen {\n count = ${nope}\n}\n", 2, "undefined variable 'nope'"),
    ("bad-replicas", "stage gen = tensor_gen {\n replicas = 0\n}\n", 2, "replicas must be"),
    ("bad-host", "host a = http://x\n", 1, "tcp://ADDRESS:PORT"),
    ("unknown-host", "host a = tcp://127.0.0.1:5000\nstage gen = tensor_gen {\n host = b\n}\n", 3, "unknown host 'b'"),
    ("no-host", "host a = tcp://127.0.0.1:5000\nstage gen = tensor_gen {\n}\n", 2, "no 'host = NAME'"),
    ("unterminated-string", "stage gen = tensor_gen {\n count = \"12\n}\n", 2, "unterminated string"),
    ("missing-plugin", "plugin \"nowhere/libx.so\"\n", 1, "cannot load plugin"),
    ("empty", "# nothing\n", 1, "no stages"),
]


def check(name, text, args=()):
    path = os.path.join(tmp, name + ".flow")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([saeflow, "check", path, *args], capture_output=True, text=True)
    return path, r


path, r = check("good", GOOD)
if r.returncode != 0 or "ok (2 stages, 3 instances" not in r.stdout:
    failures += 1
    print("FAIL good file:", r.returncode, r.stdout, r.stderr)
path, r = check("good-override", GOOD, ["n=20"])
if r.returncode != 0:
    failures += 1
    print("FAIL override of a declared variable:", r.stderr)
path, r = check("sweep", GOOD, ["--sweep", "n=3,4,5"])
if r.returncode != 0 or r.stdout.count("ok (2 stages") != 3 or "sweep 3/3: n=5" not in r.stderr:
    failures += 1
    print("FAIL sweep over three values:", r.returncode, r.stdout, r.stderr)
path, r = check("bad-override", GOOD, ["m=20"])
if r.returncode != 2 or "'m' is not a variable" not in r.stderr:
    failures += 1
    print("FAIL unknown override:", r.returncode, r.stderr)

for name, text, line, words in BAD:
    path, r = check(name, text)
    want = f"{path}:{line}:"
    if r.returncode != 2 or want not in r.stderr or words not in r.stderr:
        failures += 1
        print(f"FAIL {name}: exit {r.returncode}, want '{want}' and '{words}' in:\n  {r.stderr.strip()}")
    else:
        print(f"ok   {name}: {r.stderr.strip()}")

print(f"{len(BAD) + 4 - failures} of {len(BAD) + 4} pipeline-file checks passed")
sys.exit(1 if failures else 0)
