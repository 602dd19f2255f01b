"""Runs a saeflow pipeline whose last stage is `zmq_out` and collects what it emits.

run(saeflow, flow_text) -> (messages, returncode, stderr); the flow text must contain
`endpoint = "@ENDPOINT@"` in its zmq_out stage (a free tcp port is put there)."""
import os
import socket
import subprocess
import tempfile
import time

import msgpack
import msgpack_numpy
import zmq


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(saeflow, flow_text, timeout=120):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with tempfile.NamedTemporaryFile("w", suffix=".flow", delete=False) as f:
        f.write(flow_text.replace("@ENDPOINT@", endpoint))
        path = f.name
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.connect(endpoint)
    proc = subprocess.Popen([saeflow, "run", path, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    messages = []
    deadline = None
    try:
        while True:
            if sock.poll(200):
                frame = sock.recv()
                if not frame:
                    break
                messages.append(msgpack.unpackb(frame, object_hook=msgpack_numpy.decode))
                continue
            if proc.poll() is not None:  # exited: a failure, or the last frames are on the way
                if proc.returncode != 0:
                    break
                deadline = deadline or time.monotonic() + 5
                if time.monotonic() > deadline:
                    break
    finally:
        out, err = proc.communicate(timeout=timeout)
        sock.close(linger=0)
        ctx.term()
        os.unlink(path)
    return messages, proc.returncode, err


def skip_unless_stage(saeflow, name):
    r = subprocess.run([saeflow, "stages", name], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"SKIP: stage {name} is not built (configure with its folder in -Dstages)")
        raise SystemExit(77)
