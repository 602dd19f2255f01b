#!/bin/sh
# Runs fm_test_vocab on each tokenizer model given (the suite's data/suite/tokenizer.model, and the
# LLM-jp one from ../shared when present) against spm_export_vocab's listing of it.
# usage: test_vocab.sh FM_TEST_VOCAB MODEL...
exe=$1
shift
command -v spm_export_vocab >/dev/null || { echo "spm_export_vocab (Debian sentencepiece) not installed: skip"; exit 77; }
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
ran=0
for model in "$@"; do
    [ -f "$model" ] || { echo "$model not found: not compared"; continue; }
    spm_export_vocab --model="$model" --output="$dir/listing.vocab" || exit 1
    echo "$model:"
    "$exe" "$model" "$dir/listing.vocab" || exit 1
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "none of the models found: skip"; exit 77; }
