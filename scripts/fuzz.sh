#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz, on the stable toolchain with
# RUSTC_BOOTSTRAP=1): each target of fuzz/ for SECONDS (default 60), one after the other,
# from the committed seeds in fuzz/seeds/ plus what earlier runs found (fuzz/corpus/, not
# committed). Exits non-zero when a target crashes, panics, leaks past the RSS limit or hangs;
# the input is left in fuzz/artifacts/<target>/ (see fuzz/README.md to reproduce it).
# Built with cargo-fuzz's default profile: optimized, with debug assertions and overflow
# checks on, so an arithmetic overflow is a crash too. No sanitizer by default: the crate
# forbids `unsafe`, so AddressSanitizer has nothing of ours to check, and it made the cold
# build the slowest step of the suite (figures in fuzz/README.md). FUZZ_SANITIZER=address
# (or any of cargo-fuzz's `--sanitizer` values) puts it back.
#   scripts/fuzz.sh           # about a minute per target
#   scripts/fuzz.sh 3600      # an hour per target
#   FUZZ_SANITIZER=address scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."

per_target=${1:-60}
case $per_target in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$per_target'" >&2; exit 2 ;;
esac
sanitizer=${FUZZ_SANITIZER:-none}
case $sanitizer in
  none | address | leak | memory | thread) ;;
  *) echo "fuzz.sh: FUZZ_SANITIZER must be none, address, leak, memory or thread, got '$sanitizer'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

failed=()
for target in decode query state_file; do
  echo "== fuzz $target for ${per_target}s (sanitizer: $sanitizer)" >&2
  mkdir -p "fuzz/corpus/$target"
  extra=()
  [ -f "fuzz/$target.dict" ] && extra+=("-dict=fuzz/$target.dict")
  # The first directory takes what the run finds; the seeds are only read.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer "$sanitizer" "$target" \
      "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$per_target" -timeout=10 "${extra[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${per_target}s per target" >&2
