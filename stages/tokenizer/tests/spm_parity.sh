#!/bin/sh
# SentencePiece parity: saeflow's ids must equal spm_encode's, line for line, on the mixed test
# text, for the LLM-jp-3 model (Unigram, byte fallback, identity normaliser) and for eight
# models trained here with spm_train (BPE and Unigram; nmt_nfkc / nfkc_cf precompiled charsmaps;
# identity; byte fallback; user-defined symbols; extra-whitespace removal on and off; whitespace
# as suffix; no dummy prefix; unused pieces).
# Also checks the round trip decode(encode(line)) for the lossless models.
# usage: spm_parity.sh TOK_TOKENIZE TEXT.txt.gz LLMJP.model
set -eu
tok=$1 text_gz=$2 llmjp=$3
command -v spm_encode >/dev/null && command -v spm_train >/dev/null || {
    echo "SKIP: spm_encode/spm_train (Debian package sentencepiece) not installed"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gzip -dc "$text_gz" > "$dir/text"
# Invalid UTF-8 too (lone continuation, truncated sequences, overlong, surrogate, > U+10FFFF):
# SentencePiece turns each bad byte into U+FFFD.
printf 'bad \200 byte\nend \343\201\nover\300\257long \355\240\200 sur \364\220\200\200 big\n\377\376\n' >> "$dir/text"
fail=0
check() { # name model
    "$tok" "$2" < "$dir/text" > "$dir/$1.ours"
    spm_encode --model="$2" --output_format=id < "$dir/text" > "$dir/$1.ref"
    lines=$(wc -l < "$dir/$1.ref")
    if cmp -s "$dir/$1.ours" "$dir/$1.ref"; then
        echo "ok   $1: $lines lines, $(wc -w < "$dir/$1.ref") ids identical to spm_encode"
    else
        echo "FAIL $1: ids differ from spm_encode; first differing lines:"
        diff "$dir/$1.ours" "$dir/$1.ref" | head -6
        fail=1
    fi
}
if [ -r "$llmjp" ]; then check llm-jp "$llmjp"; else echo "note: $llmjp absent, LLM-jp check skipped"; fi
train() { # name args...
    name=$1; shift
    spm_train --input="$dir/text" --model_prefix="$dir/$name" --num_threads=2 --minloglevel=2 "$@" >/dev/null 2>&1
    check "$name" "$dir/$name.model"
}
train bpe-nfkc --model_type=bpe --vocab_size=2000
train unigram-nfkc --model_type=unigram --vocab_size=2000
train bpe-identity-bytes --model_type=bpe --vocab_size=3000 --byte_fallback=true \
    --user_defined_symbols='<sep>,東京,foo' --normalization_rule_name=identity \
    --remove_extra_whitespaces=false --split_digits=true
train unigram-nfkccf-bytes --model_type=unigram --vocab_size=3000 --byte_fallback=true \
    --user_defined_symbols='<sep>,東京,foo' --normalization_rule_name=nfkc_cf
train bpe-ws-suffix --model_type=bpe --vocab_size=2000 --treat_whitespace_as_suffix=true
# Unused pieces (BPE re-splits them, Unigram skips them): copies with every fifth piece unused.
for m in bpe-nfkc unigram-nfkc; do
    /usr/bin/python3 "$(dirname "$0")/spm_mark_unused.py" "$dir/$m.model" "$dir/$m-unused.model"
    check "$m-unused" "$dir/$m-unused.model"
done
train unigram-no-dummy --model_type=unigram --vocab_size=2000 --add_dummy_prefix=false \
    --normalization_rule_name=nmt_nfkc_cf

# Round trip on the lossless models (identity normaliser, spaces kept, byte fallback). Lines
# with a literal U+2581 are left out: SentencePiece itself cannot tell it from a space.
gzip -dc "$text_gz" | grep -v "$(printf '\342\226\201')" > "$dir/rt.in"
for m in "$dir/bpe-identity-bytes.model" "$llmjp"; do
    [ -r "$m" ] || continue
    "$tok" "$m" < "$dir/rt.in" | "$tok" "$m" --decode > "$dir/rt"
    if cmp -s "$dir/rt" "$dir/rt.in"; then echo "ok   round trip decode(encode(text)) == text, $(basename "$m")"
    else echo "FAIL round trip $(basename "$m")"; diff "$dir/rt" "$dir/rt.in" | head -6; fail=1; fi
done
exit $fail
