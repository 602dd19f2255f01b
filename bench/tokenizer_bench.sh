#!/bin/sh
# Tokenizer throughput, saeflow vs spm_encode on the same SentencePiece model and text, in the
# same run: one process each (single thread), then two processes each on halves of the text
# (both cores); plus saeflow's library alone (tok-bench: 1 and 2 threads sharing one tokenizer)
# and the Llama-3 tokenizer.json if it is in the npm cache.
# Rates are tokens per wall second and per CPU second (user+sys): the machine is shared, so the
# CPU-second rate is the fairer comparison; wall times show what a run got.
# usage: bench/tokenizer_bench.sh [BUILD_DIR] [MODEL] [REPS]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
model=${2:-$root/../shared/tokenizers/llm-jp-tokenizer-100k.ver3.0b1.model}
reps=${3:-3}
tok=$build/stages/tokenizer/tok-tokenize
bench=$build/stages/tokenizer/tok-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Text: every non-blank line of the team's bilingual corpus (Debian docs, en + ja).
/usr/bin/python3 - "$root/data/corpus/debian-docs.jsonl.gz" > "$tmp/text" <<'PY'
import gzip, json, sys
with gzip.open(sys.argv[1], "rt", encoding="utf-8") as f:
    for row in f:
        for line in json.loads(row)["text"].split("\n"):
            if line.strip():
                print(line)
PY
n=$(wc -l < "$tmp/text")
head -n $((n / 2)) "$tmp/text" > "$tmp/a"
tail -n +$((n / 2 + 1)) "$tmp/text" > "$tmp/b"
echo "text: $(wc -c < "$tmp/text") bytes, $n lines; model: $(basename "$model"); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# run NAME CMD...: wall and user+sys seconds of one process, output in $tmp/out
one() {
    /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$@" < "$tmp/text" > "$tmp/out"
    awk '{printf "%s %.3f\n", $1, $2 + $3}' "$tmp/time"
}
two() { # two processes on the halves, concurrently
    /usr/bin/time -f "%e %U %S" -o "$tmp/ta" "$@" < "$tmp/a" > "$tmp/oa" &
    /usr/bin/time -f "%e %U %S" -o "$tmp/tb" "$@" < "$tmp/b" > "$tmp/ob" &
    wait
    cat "$tmp/oa" "$tmp/ob" > "$tmp/out"
    awk 'NR==1{w=$1; c=$2+$3} NR==2{if ($1>w) w=$1; c+=$2+$3} END{printf "%s %.3f\n", w, c}' "$tmp/ta" "$tmp/tb"
}
median() { sort -n | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }

: > "$tmp/res"
for r in $(seq "$reps"); do
    for mode in one two; do
        set -- $($mode spm_encode --model="$model" --output_format=id); sw=$1 sc=$2
        cp "$tmp/out" "$tmp/spm.ids"
        set -- $($mode "$tok" "$model"); ow=$1 oc=$2
        cmp -s "$tmp/out" "$tmp/spm.ids" || { echo "ids differ from spm_encode!"; exit 1; }
        echo "$mode $sw $sc $ow $oc" >> "$tmp/res"
    done
done
tokens=$(wc -w < "$tmp/spm.ids")
echo "tokens: $tokens (identical ids from both)"
printf "%-34s %14s %14s %8s\n" "" "spm_encode" "saeflow" "ratio"
for mode in one two; do
    label=$([ $mode = one ] && echo "1 process" || echo "2 processes (both cores)")
    sw=$(awk -v m=$mode '$1==m{print $2}' "$tmp/res" | median); sc=$(awk -v m=$mode '$1==m{print $3}' "$tmp/res" | median)
    ow=$(awk -v m=$mode '$1==m{print $4}' "$tmp/res" | median); oc=$(awk -v m=$mode '$1==m{print $5}' "$tmp/res" | median)
    awk -v l="$label" -v t="$tokens" -v sw="$sw" -v sc="$sc" -v ow="$ow" -v oc="$oc" 'BEGIN{
        printf "%-34s %10.0f tok/s %10.0f tok/s %7.2fx\n", l " per wall s", t/sw, t/ow, sw/ow;
        printf "%-34s %10.0f tok/s %10.0f tok/s %7.2fx\n", l " per CPU s", t/sc, t/oc, sc/oc }'
done
echo "saeflow library alone (load and I/O excluded), median of $reps:"
for th in 1 2; do
    for r in $(seq "$reps"); do "$bench" "$model" "$tmp/text" $th; done | sort -k9 -n | sed -n "$(( (reps + 1) / 2 ))p" |
        awk -v th=$th '{printf "  %d thread(s): %.0f tokens/s wall, %.0f tokens per CPU s\n", th, $9, $12}'
done
l3=$build/npm-cache/tokenizer-llama3/models/tokenizer.json
if [ -r "$l3" ]; then
    echo "Llama-3 tokenizer.json (byte-level BPE), library, 1 thread:"
    "$bench" "$l3" "$tmp/text" 1 | awk '{printf "  %s tokens: %.0f tokens/s wall, %.0f tokens per CPU s\n", $1, $9, $12}'
fi
