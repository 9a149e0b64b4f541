#!/bin/sh
# rustc wrapper for the fuzz builds (fuzz/.cargo/config.toml): compare tracing covers the code
# under test, not the simulator that checks it.
#
# cargo-fuzz instruments every crate alike through RUSTFLAGS, and cargo has no per-crate
# override that comes after RUSTFLAGS. This drops one flag, `-sanitizer-coverage-trace-compares`,
# from reloc-sim's compilation only (clang's `-fsanitize-coverage-ignorelist` does the same
# for C). reloc-sim keeps everything else: AddressSanitizer and its edge counters, so its
# input decoder and its checks still guide libFuzzer. Its compare hooks fired on every table
# entry and memory word the oracle scans (45 % of `relocate`'s time) and gave libFuzzer's
# compare table only the oracle's own constants. reloc-core and every other crate are built
# as cargo-fuzz asks.
#
# Usage (by cargo): sancov-scope.sh RUSTC ARGS...
rustc=$1
shift
case " $* " in
  *" --crate-name reloc_sim "*)
    for arg in "$@"; do
      shift
      [ "$arg" = "-Cllvm-args=-sanitizer-coverage-trace-compares" ] || set -- "$@" "$arg"
    done
    ;;
esac
exec "$rustc" "$@"
