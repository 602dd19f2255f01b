#!/usr/bin/python3
"""Print {"text", "ids"} JSON lines (SentencePiece ids, no BOS) for the valid
and test documents of the corpus, for tools/check_tokenizer_suite.js."""
import gzip
import json
import os
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_suite import split_of  # noqa: E402

sp = spm.SentencePieceProcessor(model_file="data/suite/tokenizer.model")
with gzip.open("data/corpus/debian-docs.jsonl.gz", "rt", encoding="utf-8") as f:
    for line in f:
        d = json.loads(line)
        if split_of(d["id"]) != "train":
            print(json.dumps({"text": d["text"], "ids": sp.encode(d["text"])},
                             ensure_ascii=False))
