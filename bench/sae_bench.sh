#!/bin/sh
# TopK-SAE training tokens/s: saeflow's C trainer (sae_bench) beside the PyTorch reference
# (tools/sae_reference.py, the same recipe), same data, same shapes, same OpenBLAS kernel, 2 threads,
# in the same run. Each side runs REPS times, alternating; the best run counts (the machine is shared).
#
#   bench/sae_bench.sh [BUILD_DIR] [REPS]        (BUILD_DIR default: build)
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
REPS=${2:-2}
PY=/usr/bin/python3
EXE="$BUILD/stages/sae_trainer/sae_bench"
[ -x "$EXE" ] || { echo "no $EXE: build first (meson compile -C $BUILD)"; exit 1; }
grep -q avx512f /proc/cpuinfo && export OPENBLAS_CORETYPE=SKYLAKEX
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

best() { # best value of field $1 among JSON lines on stdin
    $PY -c 'import sys, json; print(max(json.loads(l)[sys.argv[1]] for l in sys.stdin if l.startswith("{")))' "$1"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"
echo "tok/s: wall clock; tok/cpu-s: per CPU-second of the process (all threads), steadier on a shared machine"
printf '%-24s %9s %11s %7s %11s %11s %7s\n' "d, latents, k, batch" "C tok/s" "torch tok/s" "ratio" \
    "C tok/cpu-s" "torch" "ratio"
# d n k batch c_steps torch_steps
for shape in "512 8192 32 4096 8 3" "2048 32768 32 4096 2 1"; do
    set -- $shape
    D=$1 N=$2 K=$3 B=$4 CS=$5 TS=$6
    $PY -c "import sys; sys.path.insert(0, 'tools'); import sae_reference as r; r.synthetic($B * 3, $D, 7).numpy().tofile('$TMP/x.f32')"
    : > "$TMP/c.txt"
    : > "$TMP/t.txt"
    i=0
    while [ $i -lt "$REPS" ]; do
        "$EXE" "$D" "$N" "$K" "$B" "$CS" "$TMP/x.f32" >> "$TMP/c.txt"
        $PY tools/sae_reference.py bench --d "$D" --n "$N" --k "$K" --batch "$B" --steps "$TS" --threads 2 \
            --data "$TMP/x.f32" >> "$TMP/t.txt"
        i=$((i + 1))
    done
    C=$(best tokens_per_s < "$TMP/c.txt")
    T=$(best tokens_per_s < "$TMP/t.txt")
    CC=$(best tokens_per_cpu_s < "$TMP/c.txt")
    TC=$(best tokens_per_cpu_s < "$TMP/t.txt")
    printf '%-24s %9.0f %11.0f %6.2fx %11.0f %11.0f %6.2fx\n' "$D, $N, $K, $B" "$C" "$T" "$($PY -c "print($C / $T)")" \
        "$CC" "$TC" "$($PY -c "print($CC / $TC)")"
done
