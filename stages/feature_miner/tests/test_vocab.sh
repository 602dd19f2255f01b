#!/bin/sh
# Runs fm_test_vocab on the LLM-jp tokenizer from ../shared against spm_export_vocab's listing.
# usage: test_vocab.sh FM_TEST_VOCAB MODEL
exe=$1 model=$2
command -v spm_export_vocab >/dev/null || { echo "spm_export_vocab (Debian sentencepiece) not installed: skip"; exit 77; }
[ -f "$model" ] || { echo "$model not found: skip"; exit 77; }
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
spm_export_vocab --model="$model" --output="$dir/llm-jp.vocab" || exit 1
"$exe" "$model" "$dir/llm-jp.vocab"
