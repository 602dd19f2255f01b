#!/usr/bin/python3
"""Copies a SentencePiece model, marking every fifth multi-character normal piece UNUSED (type 5),
by rewriting the protobuf: spm_encode on the copy is then the reference for unused pieces.
usage: spm_mark_unused.py IN.model OUT.model"""
import sys


def varint(b, i):
    """(value, next index) of the protobuf varint at b[i]."""
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7F) << s; s += 7
        if c < 0x80: return v, i


def enc(v):
    """A protobuf varint."""
    out = bytearray()
    while True:
        b = v & 0x7F; v >>= 7
        if v: out.append(b | 0x80)
        else: out.append(b); return bytes(out)


data = open(sys.argv[1], "rb").read()
out, i, k = bytearray(), 0, 0
while i < len(data):
    start = i
    key, i = varint(data, i)
    wire = key & 7
    if wire == 2:
        n, i = varint(data, i); body = data[i:i + n]; i += n
        if key >> 3 == 1:
            fields, j = [], 0
            while j < len(body):
                fk, j2 = varint(body, j)
                if fk & 7 == 2:
                    m, j3 = varint(body, j2); fields.append((fk, body[j:j3 + m])); j = j3 + m
                elif fk & 7 == 5:
                    fields.append((fk, body[j:j2 + 4])); j = j2 + 4
                else:
                    _, j3 = varint(body, j2); fields.append((fk, body[j:j3])); j = j3
            piece = [f for f in fields if f[0] >> 3 == 1][0][1]
            typ = [f for f in fields if f[0] >> 3 == 3]
            normal = not typ
            text = piece[2:].decode() if len(piece) > 1 else ""
            if normal and len(text) >= 2 and k % 5 == 0:
                fields = [f for f in fields if f[0] >> 3 != 3] + [(0x18, b"\x18\x05")]
            if normal: k += 1
            body = b"".join(f[1] for f in fields)
            out += enc(key) + enc(len(body)) + body
            continue
    elif wire == 0:
        _, i = varint(data, i)
    elif wire == 5: i += 4
    elif wire == 1: i += 8
    out += data[start:i]
open(sys.argv[2], "wb").write(out)
