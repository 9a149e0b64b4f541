#!/bin/bash -eu
# Builds every cargo-fuzz target of fuzz/ (as `cargo fuzz list` names them) into $OUT, with
# its checked-in seeds as $OUT/<target>_seed_corpus.zip: the OSS-Fuzz Rust conventions.
#
# In the build image this is $SRC/build.sh, run from $SRC/reloc (the Dockerfile's WORKDIR).
# Run from a checkout (.clusterfuzzlite/build.sh) it builds that checkout, so it can be tried
# without Docker: SRC=$(mktemp -d) OUT=$(mktemp -d) WORK=$(mktemp -d) .clusterfuzzlite/build.sh

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -f "$here/../fuzz/Cargo.toml" ]; then
  repo=$(cd "$here/.." && pwd)
else
  repo=$PWD
fi
cd "$repo/fuzz"

# rust-toolchain.toml pins stable for the workspace; sanitizer builds need nightly. The
# base image names its nightly in RUSTUP_TOOLCHAIN; elsewhere use the installed nightly.
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-nightly}"

targets=$(cargo fuzz list)
if [ -z "$targets" ]; then
  echo "build.sh: cargo fuzz list names no target" >&2
  exit 1
fi

# -O: optimised; --debug-assertions: overflow checks and debug assertions stay on, so
# arithmetic that wraps in reloc-core is a crash, as in `cargo xtask fuzz`.
cargo fuzz build -O --debug-assertions

for target in $targets; do
  cp "target/x86_64-unknown-linux-gnu/release/$target" "$OUT/"
  seeds=(corpus/"$target"/seed-*)
  if [ -e "${seeds[0]}" ]; then
    rm -f "$OUT/${target}_seed_corpus.zip"
    zip -jq "$OUT/${target}_seed_corpus.zip" "${seeds[@]}"
  fi
done
echo "build.sh: built $(echo $targets | wc -w) targets into $OUT: $(echo $targets)"
