#!/bin/sh
# rustc wrapper for the fuzz builds (fuzz/.cargo/config.toml): libFuzzer's feedback comes
# from the code under test, not from the simulator that checks it.
#
# cargo-fuzz instruments every crate alike through RUSTFLAGS, and cargo has no per-crate
# override that comes after RUSTFLAGS. For reloc-sim's compilation only, this drops
# `-sanitizer-coverage-trace-compares` and lowers `-sanitizer-coverage-level` to 1 (function
# entries instead of edges); clang's `-fsanitize-coverage-ignorelist` does the like for C.
# reloc-sim keeps AddressSanitizer and a counter per function. Its compare hooks fired on every
# table entry and memory word the oracle scans (45 % of `relocate`'s time); its edge counters
# made every loop over pages and entries a source of libFuzzer features, whose bookkeeping was
# then a third of the time. reloc-core and every other crate are built as cargo-fuzz asks.
#
# Usage (by cargo): sancov-scope.sh RUSTC ARGS...
rustc=$1
shift
case " $* " in
  *" --crate-name reloc_sim "*)
    for arg in "$@"; do
      shift
      case "$arg" in
        -Cllvm-args=-sanitizer-coverage-trace-compares) ;;
        -Cllvm-args=-sanitizer-coverage-level=*) set -- "$@" -Cllvm-args=-sanitizer-coverage-level=1 ;;
        *) set -- "$@" "$arg" ;;
      esac
    done
    ;;
esac
exec "$rustc" "$@"
