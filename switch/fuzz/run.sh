#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ (stable toolchain): builds the targets, makes seed corpora
# from the third-party test vectors, and fuzzes each target for SECONDS (default 30). Fails if
# any target found a crash (they are left under $OUT/<target>/default/crashes).
#   switch/fuzz/run.sh [SECONDS] [TARGET...]      needs afl++ (Debian) and `cargo install cargo-afl`
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
targets=("${@:-frame decode admission}")
read -r -a targets <<< "${targets[*]}"
out="${OUT:-target/afl}"
vectors=../../adapters/tests/vectors

cargo afl build --release

# Seeds: every vector, as each target reads its input.
rm -rf "$out/seeds"
mkdir -p "$out/seeds/frame" "$out/seeds/decode" "$out/seeds/admission"
n=0
for file in "$vectors"/pyiso8583/*.bin "$vectors"/moov-io/*.dat; do
    n=$((n + 1))
    case "$file" in
        *ascii-hex-bitmap*) selector='\x01' ;;   # decode: the first byte picks the dialect
        *.dat) selector='\x02' ;;                 # moov-io: binary bitmap, BCD
        *) selector='\x00' ;;
    esac
    { printf "$selector"; cat "$file"; } > "$out/seeds/decode/$n"
    cp "$file" "$out/seeds/admission/$n"
    size=$(wc -c < "$file")
    { printf '\x00'; printf "\\x$(printf %02x $((size >> 8)))\\x$(printf %02x $((size & 255)))"; cat "$file"; } \
        > "$out/seeds/frame/$n"
done

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
failed=0
for target in "${targets[@]}"; do
    rm -rf "${out:?}/$target"
    cargo afl fuzz -i "$out/seeds/$target" -o "$out/$target" -V "$seconds" "target/release/$target" \
        > "$out/$target.log" 2>&1 || { echo "afl-fuzz failed for $target:"; tail -20 "$out/$target.log"; exit 1; }
    stats="$out/$target/default/fuzzer_stats"
    crashes=$(awk '/^saved_crashes/ {print $3}' "$stats")
    echo "$target: $(awk '/^execs_done|^execs_per_sec|^corpus_count|^bitmap_cvg|^saved_crashes/ {printf "%s %s  ", $1, $3}' "$stats")"
    if [ "$crashes" != "0" ]; then
        echo "$target: $crashes crashes in $out/$target/default/crashes"
        failed=1
    fi
done
exit "$failed"
