"""Runs a pipeline file whose source is a zmq_in at ep_in and whose sink is a zmq_out at ep_out:
sends msgs (MESSAGES.md dicts, msgpack-numpy), then the end-of-stream frame, and collects what
comes out. Shared by the forward tests (needs pyzmq and msgpack_numpy)."""
import os
import subprocess

import msgpack
import msgpack_numpy
import zmq


def write_flow(tmp, forward, extra=""):
    """Writes tmp/p.saeflow: zmq_in -> forward (forward: its parameter lines) -> zmq_out, plus the
    stage blocks in extra (which may read from `fwd`). -> (file, ep_in, ep_out)"""
    ep_in, ep_out = f"ipc://{tmp}/in", f"ipc://{tmp}/out"
    pipe = os.path.join(tmp, "p.saeflow")
    params = "".join(f"    {line}\n" for line in forward)
    with open(pipe, "w") as f:
        f.write(f"""
stage src = zmq_in {{
    endpoint = "{ep_in}"
}}
stage fwd = forward {{
    input = src
{params}}}
stage sink = zmq_out {{
    input = fwd
    endpoint = "{ep_out}"
}}
{extra}""")
    return pipe, ep_in, ep_out


def run(saeflow, pipe, ep_in, ep_out, msgs, timeout_ms=60000):
    """-> (exit code, the run's output, the messages received)"""
    proc = subprocess.Popen([saeflow, "run", pipe, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.connect(ep_in)
    pull.connect(ep_out)
    pull.setsockopt(zmq.RCVTIMEO, 200)
    for msg in msgs:
        push.send(msgpack.packb(msg, default=msgpack_numpy.encode))
    push.send(b"")
    got = []
    waited = 0
    while True:  # until the end frame, or the pipeline exits without one (a failed stage)
        try:
            frame = pull.recv()
        except zmq.Again:
            waited += 200
            if proc.poll() is not None:
                break
            if waited >= timeout_ms:
                print("timed out waiting for the pipeline")
                proc.kill()
                break
            continue
        if not frame:
            break
        got.append(msgpack.unpackb(frame, object_hook=msgpack_numpy.decode, raw=False))
    out, _ = proc.communicate(timeout=60)
    push.close(0)
    pull.close(0)
    ctx.term()
    return proc.returncode, out, got
