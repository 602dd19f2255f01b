#!/usr/bin/env python3
"""Pipeline files: valid ones pass `saeflow check`; each class of bad file gets a file:line message
saying what is wrong, both the file's own mistakes and what each stage's check finds in its
parameters and the files they name (a missing tokenizer, a wrong suite path, a layer beyond the
model's depth, an invalid enum value, a tensor larger than a message), and `saeflow run` refuses the
same before starting anything. A pipeline within the instance limit runs even under a low open-file
limit. Usage: test_pipeline_errors.py SAEFLOW SOURCE_ROOT"""
import os, subprocess, sys, tempfile

saeflow, root = os.path.abspath(sys.argv[1]), sys.argv[2]
suite = os.path.join(root, "data", "suite")
model = os.path.join(suite, "step-001000")
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
    # the file itself
    ("nul-byte", "stage gen = tensor_gen {\n count = 1\0 2\n}\n", 2, "a NUL byte at column 11"),
    ("self-input", "stage a = relay {\n  input = a\n}\n", 2, "reads from itself"),
    ("port-range", "host a = tcp://127.0.0.1:99999\nstage gen = tensor_gen {\n host = a\n}\n", 1, "first port from 1 to 65535"),
    ("port-overflow", "host a = tcp://127.0.0.1:65535\nstage gen = tensor_gen {\n host = a\n replicas = 2\n}\n", 1,
     "listen on ports 65535 to 65536"),
    ("too-many-instances", "stage gen = tensor_gen {\n}\n" + "".join(
        f"stage r{i} = relay {{\n input = {'gen' if i == 0 else f'r{i - 1}'}\n}}\n" for i in range(3001)), 3072,
     "3002 stage instances (replicas included) in one pipeline; saeflow runs at most 1024, and stage 'r1023' passes that"),
    ("reserved-then-unknown", "stage gen = tensor_gen {\n replicas = 2\n colour = red\n}\n", 3, "has no parameter 'colour'"),
    # enabled = false takes a stage out; what reads it must go too
    ("bad-enabled", "stage gen = tensor_gen {\n enabled = maybe\n}\n", 2, "enabled must be true or false, not 'maybe'"),
    ("reads-disabled", "stage gen = tensor_gen {\n enabled = false\n}\nstage s = verify_sink {\n input = gen\n}\n", 5,
     "stage 's' reads from 'gen', which is disabled (enabled = false)"),
    ("all-disabled", "stage gen = tensor_gen {\n enabled = false\n}\n", 3, "every stage is disabled"),
    # each stage's own check: parameters and the files they name
    ("tensor-wraps", "stage gen = tensor_gen {\n rows = 4294967296\n cols = 1073741824\n}\n", 2, "more than a message holds"),
    ("tensor-over-4gib", "stage gen = tensor_gen {\n rows = 2000000000\n cols = 2000000000\n}\n", 2, "more than a message holds"),
    ("missing-tokenizer", "stage gen = tensor_gen {\n}\nstage tok = tokenizer {\n input = gen\n tokenizer = \"/nonexistent/tokenizer.model\"\n}\n",
     5, "parameter 'tokenizer': no tokenizer found (tried /nonexistent/tokenizer.model)"),
    ("wrong-suite", "stage gen = tensor_gen {\n}\nstage fwd = forward {\n input = gen\n model = \"/nonexistent/step-001000\"\n hooks = resid_post.1\n}\n",
     5, "parameter 'model': /nonexistent/step-001000/config.json"),
    ("layer-beyond-depth", f"stage gen = tensor_gen {{\n}}\nstage fwd = forward {{\n input = gen\n model = \"{model}\"\n hooks = resid_post.9\n}}\n",
     6, "hook resid_post.9: the model has 5 blocks (0..4) (" + model + ")"),
    ("bad-enum", "stage gen = tensor_gen {\n}\nstage sae = sae_trainer {\n input = gen\n out_dir = /tmp/x\n normalize = unti\n}\n",
     6, "parameter 'normalize' of stage 'sae' (sae_trainer) must be one of unit|scalar|none, not 'unti' (did you mean 'unit'?)"),
    # the declarations: message kinds, ranges, and the closest name to a typo
    ("wrong-kind", "stage docs = text_source {\n corpora = x\n}\nstage tok = tokenizer {\n input = docs\n tokenizer = x\n}\n"
                   "stage sae = sae_trainer {\n input = tok\n out_dir = /tmp/x\n}\n", 9,
     "stage 'sae' (sae_trainer) takes activations messages, but its input 'tok' (tokenizer) emits tokens; stages that emit "
     "activations: forward, shard_source"),
    ("out-of-range", "stage gen = tensor_gen {\n rows = 0\n}\n", 2, "parameter 'rows' of stage 'gen' (tensor_gen) must be in [1, inf), not 0"),
    ("out-of-range-float", "stage gen = tensor_gen {\n}\nstage sae = sae_trainer {\n input = gen\n out_dir = /tmp/x\n norm_mean = -1\n}\n",
     6, "must be in [0, inf), not -1"),
    ("typo-param", "stage gen = tensor_gen {\n  cout = 1\n}\n", 2, "has no parameter 'cout' (did you mean 'count'?)"),
    ("typo-stage", "stage gen = tensor_gn {\n}\n", 1, "unknown stage type 'tensor_gn' (did you mean 'tensor_gen'?)"),
    ("typo-value", "stage gen = tensor_gen {\n}\nstage tok = tokenizer {\n input = gen\n tokenizer = x\n mode = chunck\n}\n", 6,
     "must be one of chunk|truncate, not 'chunck' (did you mean 'chunk'?)"),
    ("no-near-name", "stage gen = tensor_gen {\n  colour = 1\n}\n", 2, "has no parameter 'colour'; its parameters are"),
    ("bad-endpoint", "stage gen = tensor_gen {\n}\nstage o = zmq_out {\n input = gen\n endpoint = tcp://127.0.0.1:99999\n}\n", 5,
     "parameter 'endpoint': 'tcp://127.0.0.1:99999' needs a port from 1 to 65535"),
    ("bad-split", "stage docs = text_source {\n corpora = x\n split = trian\n}\nstage s = verify_sink {\n input = docs\n}\n",
     3, "cannot be 'trian': one of train, validation, test, all"),
]


def check(name, text, args=(), command="check"):
    path = os.path.join(tmp, name + ".flow")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([saeflow, command, path, *args], capture_output=True, text=True)
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
# a disabled stage is not there at all: not checked (its required parameter is missing), not run
OPTIONAL = GOOD + "set extra = false\nstage other = zmq_out {\n    enabled = ${extra}\n    input = gen\n}\n"
path, r = check("disabled", OPTIONAL, ["--no-progress"], "run")
if r.returncode != 0 or "other" in r.stderr.replace(path, ""):
    failures += 1
    print("FAIL a disabled stage (enabled = false) is left out:", r.returncode, r.stderr)
else:
    print("ok   a disabled stage is left out of the check and the run")
path, r = check("enabled", OPTIONAL, ["extra=true"])
if r.returncode != 2 or "needs parameter 'endpoint'" not in r.stderr:
    failures += 1
    print("FAIL the same stage enabled is checked:", r.returncode, r.stderr)
path, r = check("bad-override", GOOD, ["m=20"])
if r.returncode != 2 or "'m' is not a variable" not in r.stderr or "(did you mean 'n'?)" not in r.stderr:
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

# Several findings are all reported, each at its line; run refuses them before starting anything.
TWO = "stage gen = tensor_gen {\n rows = 4294967296\n cols = 1073741824\n}\nstage tok = tokenizer {\n input = gen\n tokenizer = /nonexistent.json\n}\n"
for command in ("check", "run"):
    path, r = check("two-findings-" + command, TWO, ["--no-progress"] if command == "run" else [], command)
    ok = r.returncode == 2 and f"{path}:2:" in r.stderr and f"{path}:7:" in r.stderr and "2 problems found" in r.stderr
    if command == "run":
        ok = ok and "nothing was started" in r.stderr and "run summary" not in r.stderr
    if not ok:
        failures += 1
        print(f"FAIL {command} with two findings: exit {r.returncode}:\n  {r.stderr.strip()}")
    else:
        print(f"ok   {command} reports both findings: {r.stderr.strip()}")

# At the instance limit's order of size a pipeline runs even where ZeroMQ's default of 1023 sockets
# and an open-file limit of 1024 would not let it start (520 relays: about 1040 sockets).
many = "stage gen = tensor_gen {\n count = 3\n rows = 2\n cols = 2\n}\n" + "".join(
    f"stage r{i} = relay {{\n input = {'gen' if i == 0 else f'r{i - 1}'}\n}}\n" for i in range(520)) + \
    "stage s = verify_sink {\n input = r519\n expect = 3\n}\n"
path = os.path.join(tmp, "many.flow")
with open(path, "w") as f:
    f.write(many)
r = subprocess.run(["sh", "-c", 'ulimit -Sn 1024 && exec "$0" run "$1" --no-progress', saeflow, path],
                   capture_output=True, text=True, timeout=300)
if r.returncode != 0 or "s: received = 3" not in r.stderr:
    failures += 1
    print(f"FAIL 522 instances under ulimit -n 1024: exit {r.returncode}:\n  {r.stderr.strip()[-600:]}")
else:
    print("ok   522 stage instances run under ulimit -n 1024")

total = len(BAD) + 4 + 2 + 1
print(f"{total - failures} of {total} pipeline-file checks passed")
sys.exit(1 if failures else 0)
