#!/bin/bash
# Shard writer and reader throughput against dd on the same disk, in the same run.
#
#   bench/shards_bench.sh [BUILD_DIR]      (default build-shards; needs its shards_driver)
#
# Write: the writer module (shards_driver write --bench: conversion, norms, safetensors, CRC-32,
# fsync, rename, manifest) vs `dd bs=1M conv=fdatasync` writing the same bytes (copies of the
# shards from the page cache), one file per shard; also with oflag=nocache, since the writer drops
# each fsync'd shard from the page cache (on this VM, growing the page cache into never-used
# memory costs ~8 ms per MB, which otherwise decides who wins).
# Read: the reader module in order (shards_driver read: CRC-32 pass + mmap + batch copies) vs dd
# reading the same shard files, from a cold page cache (each file's pages dropped with
# `dd iflag=nocache count=0`, checked with fincore) and warm; and the shuffled reader (buffer of
# 131072 rows, batches of 4096) warm. Rounds alternate; medians printed.
# Environment: SHARDS_BENCH_DIR (where to write, default /work), D (768), SEQS (1350 x 256 tokens),
# ROUNDS (3), DTYPES ("F32 BF16").
set -euo pipefail
BUILD=${1:-build-shards}
DRIVER=$BUILD/stages/shards/shards_driver
[ -x "$DRIVER" ] || { echo "no $DRIVER: build first (meson compile -C $BUILD)"; exit 77; }
D=${D:-768}
SEQS=${SEQS:-1350}
ROUNDS=${ROUNDS:-3}
DIR=$(mktemp -d -p "${SHARDS_BENCH_DIR:-/work}" shards-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1 / 1e6 / ($3 - $2):.1f}')"; }
median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop() { for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done; }
cached_kb() { fincore -b -n -o RES "$@" 2>/dev/null | awk '{s+=$1} END {printf "%d", s/1024}'; }

echo "shards benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "disk: $(df -h "$DIR" | awk 'NR==2 {print $1, $2}'), d=$D, $SEQS x 256 tokens per run, $ROUNDS rounds"

declare -A R
for dtype in ${DTYPES:-F32 BF16}; do
    W=() DDW=() DDWN=() RS=() RC=() RN=() DDRC=() RW=() DDRW=()
    for r in $(seq "$ROUNDS"); do
        rm -rf "$DIR/w"
        t0=$(now)
        "$DRIVER" write "$DIR/w" --bench --seqs "$SEQS" --d "$D" --dtype $dtype --shard-kb 131072 --no-resume >/dev/null
        t1=$(now)
        bytes=$(cat "$DIR"/w/*.safetensors | wc -c)
        W+=("$(mbps "$bytes" "$t0" "$t1")")
        # dd writes the same bytes (the shards, in the page cache after the writer), file by file
        # with conv=fdatasync, like the writer's per-shard fsync. Not /dev/zero: this VM's disk
        # writes zeros at a different speed.
        shards=("$DIR"/w/*.safetensors)
        cat "${shards[@]}" >/dev/null
        mkdir -p "$DIR/dd"
        t0=$(now)
        for f in "${shards[@]}"; do dd if="$f" of="$DIR/dd/${f##*/}" bs=1M conv=fdatasync status=none; done
        t1=$(now)
        DDW+=("$(mbps "$bytes" "$t0" "$t1")")
        rm -rf "$DIR/dd"
        mkdir -p "$DIR/dd"
        t0=$(now)
        for f in "${shards[@]}"; do dd if="$f" of="$DIR/dd/${f##*/}" bs=1M conv=fdatasync oflag=nocache status=none; done
        t1=$(now)
        DDWN+=("$(mbps "$bytes" "$t0" "$t1")")
        rm -rf "$DIR/dd"

        drop "${shards[@]}"
        left=$(cached_kb "${shards[@]}")
        t0=$(now)
        "$DRIVER" read "$DIR/w" >/dev/null
        t1=$(now)
        RC+=("$(mbps "$bytes" "$t0" "$t1")")
        drop "${shards[@]}"
        t0=$(now)
        "$DRIVER" read "$DIR/w" --no-verify >/dev/null
        t1=$(now)
        RN+=("$(mbps "$bytes" "$t0" "$t1")")
        drop "${shards[@]}"
        t0=$(now)
        cat "${shards[@]}" | dd of=/dev/null bs=1M status=none
        t1=$(now)
        DDRC+=("$(mbps "$bytes" "$t0" "$t1")")
        # Warm: everything just read is in the page cache.
        cat "${shards[@]}" >/dev/null
        t0=$(now)
        "$DRIVER" read "$DIR/w" >/dev/null
        t1=$(now)
        RW+=("$(mbps "$bytes" "$t0" "$t1")")
        t0=$(now)
        cat "${shards[@]}" | dd of=/dev/null bs=1M status=none
        t1=$(now)
        DDRW+=("$(mbps "$bytes" "$t0" "$t1")")
        t0=$(now)
        "$DRIVER" read "$DIR/w" --shuffle --buffer-rows 131072 --batch-rows 4096 >/dev/null
        t1=$(now)
        RS+=("$(mbps "$bytes" "$t0" "$t1")")
        echo "  $dtype round $r: $((bytes / 1048576)) MiB in ${#shards[@]} shards; cached before cold reads: ${left} KiB;" \
             "write ${W[-1]} vs dd ${DDW[-1]} (nocache ${DDWN[-1]}) MB/s; cold read ${RC[-1]} (no verify ${RN[-1]}) vs dd ${DDRC[-1]};" \
             "warm read ${RW[-1]} (shuffled ${RS[-1]}) vs dd ${DDRW[-1]}"
    done
    R[$dtype,w]=$(echo "${W[@]}" | median); R[$dtype,ddw]=$(echo "${DDW[@]}" | median)
    R[$dtype,ddwn]=$(echo "${DDWN[@]}" | median)
    R[$dtype,rc]=$(echo "${RC[@]}" | median); R[$dtype,rn]=$(echo "${RN[@]}" | median)
    R[$dtype,ddrc]=$(echo "${DDRC[@]}" | median)
    R[$dtype,rw]=$(echo "${RW[@]}" | median); R[$dtype,ddrw]=$(echo "${DDRW[@]}" | median)
    R[$dtype,rs]=$(echo "${RS[@]}" | median)
done

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
printf "%-6s %-34s %10s %10s %7s\n" dtype measure "ours MB/s" "dd MB/s" ratio
for dtype in ${DTYPES:-F32 BF16}; do
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "write (fsync'd)" ${R[$dtype,w]} ${R[$dtype,ddw]} "$(ratio ${R[$dtype,w]} ${R[$dtype,ddw]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "write vs dd oflag=nocache" ${R[$dtype,w]} ${R[$dtype,ddwn]} "$(ratio ${R[$dtype,w]} ${R[$dtype,ddwn]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "read cold, CRC verified" ${R[$dtype,rc]} ${R[$dtype,ddrc]} "$(ratio ${R[$dtype,rc]} ${R[$dtype,ddrc]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "read cold, no verify" ${R[$dtype,rn]} ${R[$dtype,ddrc]} "$(ratio ${R[$dtype,rn]} ${R[$dtype,ddrc]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "read warm (page cache), verified" ${R[$dtype,rw]} ${R[$dtype,ddrw]} "$(ratio ${R[$dtype,rw]} ${R[$dtype,ddrw]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "read warm, shuffled (131072 rows)" ${R[$dtype,rs]} ${R[$dtype,ddrw]} "$(ratio ${R[$dtype,rs]} ${R[$dtype,ddrw]})"
    printf "%-6s %-34s %10s %10s %7s\n" $dtype "  the same vs ours in order (warm)" ${R[$dtype,rs]} ${R[$dtype,rw]} "$(ratio ${R[$dtype,rs]} ${R[$dtype,rw]})"
done
