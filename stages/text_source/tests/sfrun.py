"""Runs a saeflow pipeline whose last stage is `zmq_out` and collects what it emits.

run(saeflow, flow_text) -> (messages, returncode, stderr); the flow text must contain
`endpoint = "@ENDPOINT@"` in its zmq_out stage (a free tcp port is put there). With interrupt_after
= S, the run gets SIGINT S seconds after its first message (as Ctrl-C would), and what it emits
while it stops is collected too."""
import os
import signal
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


def run(saeflow, flow_text, timeout=120, interrupt_after=None):
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
    deadline = interrupt_at = None
    try:
        while True:
            if interrupt_at and time.monotonic() > interrupt_at:
                proc.send_signal(signal.SIGINT)
                interrupt_at = 0
            if sock.poll(20 if interrupt_at else 200):
                frame = sock.recv()
                if not frame:
                    break
                messages.append(msgpack.unpackb(frame, object_hook=msgpack_numpy.decode))
                if interrupt_after is not None and interrupt_at is None:
                    interrupt_at = time.monotonic() + interrupt_after
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
