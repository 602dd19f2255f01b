#!/usr/bin/python3
"""Writes tokenizer.json variants that exercise the tokenizer.json features the two npm files do not:
GPT-2's ByteLevel regex, Qwen2's Split pattern with NFC, Metaspace, NFKC, merges as pairs
(["a", "b"], as newer tokenizers write them; same ids as Llama-3's), and a Unigram model (the
LLM-jp vocabulary as tokenizer.json, left out if LLMJP_MODEL is absent). Built from the npm Llama
files and the LLM-jp .model, so nothing new is committed but this script and the reference ids
(tools/tokenizer_reference.mjs).

usage: tools/tokenizer_variants.py NPM_CACHE LLMJP_MODEL OUT_DIR
       -> OUT_DIR/NAME/{tokenizer.json,tokenizer_config.json} for each variant; prints their names"""
import json
import os
import sys

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SP = "\u2581"


def spm_pieces(path):
    """(piece, score, type) of a SentencePiece model, read with a minimal protobuf decoder."""
    data = open(path, "rb").read()

    def varint(b, i):
        v = s = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v, i

    pieces, i = [], 0
    while i < len(data):
        key, i = varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = varint(data, i)
            body, i = data[i:i + n], i + n
            if field == 1:  # ModelProto.pieces
                piece, score, typ, j = "", 0.0, 1, 0
                while j < len(body):
                    k, j = varint(body, j)
                    if k >> 3 == 1:
                        m, j = varint(body, j)
                        piece, j = body[j:j + m].decode("utf-8"), j + m
                    elif k >> 3 == 2:
                        import struct
                        score, j = struct.unpack("<f", body[j:j + 4])[0], j + 4
                    elif k >> 3 == 3:
                        typ, j = varint(body, j)
                pieces.append((piece, score, typ))
        elif wire == 0:
            _, i = varint(data, i)
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
    return pieces


def llmjp_unigram(pieces):
    """The LLM-jp SentencePiece vocabulary and scores as a tokenizer.json Unigram model."""
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, (p, _, t) in enumerate(pieces) if t == 3],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "add_prefix_space": True, "split": False},
        "post_processor": None,
        "decoder": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "add_prefix_space": True, "split": False},
        # transformers.js' Unigram has no byte fallback: unknown characters become <unk> on both sides.
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": False,
                  "vocab": [[p, s] for p, s, _ in pieces]},
    }


def main():
    cache, llmjp, out = sys.argv[1:4]
    l3 = json.load(open(os.path.join(cache, "tokenizer-llama3/models/tokenizer.json")))
    l2 = json.load(open(os.path.join(cache, "tokenizer-llama2/models/tokenizer.json")))
    variants = {}

    v = json.loads(json.dumps(l3))
    v["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    v["model"]["ignore_merges"] = False
    variants["gpt2-bytelevel"] = v

    v = json.loads(json.dumps(l3))
    v["normalizer"] = {"type": "NFC"}
    v["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": QWEN2}
    v["model"]["ignore_merges"] = False
    variants["qwen2-nfc"] = v

    v = json.loads(json.dumps(l2))
    v["normalizer"] = None
    v["pre_tokenizer"] = {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "add_prefix_space": True, "split": False}
    v["decoder"] = {"type": "Sequence", "decoders": [{"type": "Metaspace", "replacement": SP,
                    "prepend_scheme": "first", "add_prefix_space": True, "split": False}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    variants["llama2-metaspace"] = v

    v = json.loads(json.dumps(l2))
    v["normalizer"]["normalizers"].insert(0, {"type": "NFKC"})
    variants["llama2-nfkc"] = v

    v = json.loads(json.dumps(l3))
    v["model"]["merges"] = [m.split(" ", 1) for m in v["model"]["merges"]]  # byte-level pieces hold no space
    variants["llama3-pairs"] = v

    v = json.loads(json.dumps(l3))  # added tokens that take the whitespace beside them (stages/tokenizer/tests/added.txt)
    flags = {"<|eot_id|>": (True, True), "<|start_header_id|>": (True, False), "<|end_header_id|>": (False, True)}
    for tok in v["added_tokens"]:
        if tok["content"] in flags:
            tok["lstrip"], tok["rstrip"] = flags[tok["content"]]
    variants["llama3-strip"] = v

    v = json.loads(json.dumps(l3))  # Regex Replace (lookahead-free \s+) after Strip, before Llama-3's Split
    v["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Strip", "strip_left": True, "strip_right": True},
                                                           {"type": "Replace", "pattern": {"Regex": "\\s{2,}|\t"}, "content": " "}]}
    variants["llama3-replace-re"] = v

    v = json.loads(json.dumps(l2))  # BertNormalizer (clean text, spaced CJK, no accents, lower case) before Llama-2's
    v["normalizer"]["normalizers"].insert(0, {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                              "strip_accents": True, "lowercase": False})
    variants["llama2-bert"] = v

    # WordPiece (BERT's pipeline) with Llama-2's pieces as its vocabulary: "▁x" -> "x", others -> "##x"
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for piece in l2["model"]["vocab"]:
        if piece.startswith("<"):
            continue
        w = piece[1:] if piece.startswith(SP) else "##" + piece
        if w and w != "##" and w not in vocab:
            vocab[w] = len(vocab)
    special = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                "special": True} for c, i in list(vocab.items())[:4]]
    variants["bert-wordpiece"] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": False, "lowercase": False},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}}

    if os.path.exists(llmjp):
        variants["llmjp-unigram"] = llmjp_unigram(spm_pieces(llmjp))
        # Modelled on LLM-jp ver2.2's tokenizer.json: no pre-tokeniser, Regex Replace normalisers
        # (a lookbehind at the start, runs of spaces, and a lookbehind-guarded digit rule).
        v = llmjp_unigram(spm_pieces(llmjp))
        v["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Strip", "strip_left": False, "strip_right": True},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Replace", "pattern": {"Regex": "(?<![0-9]) (?=[0-9])"}, "content": "  "},
            {"type": "Replace", "pattern": {"Regex": "(?<!\\n)^"}, "content": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]}
        v["pre_tokenizer"] = None
        v["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": SP}, "content": " "},
                                                         {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        variants["llmjp-v22"] = v
    for name, tj in variants.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({}, f)
    print(" ".join(variants))


if __name__ == "__main__":
    main()
