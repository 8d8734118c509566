#!/usr/bin/env bash
# Build lrfast's kernels with AddressSanitizer + UndefinedBehaviorSanitizer in a
# copy of the tree and run the test suite against that build (issue 7).
#
#   scripts/sanitize.sh                      # whole suite
#   scripts/sanitize.sh tests/test_errors.py -k Adam   # any pytest arguments
#
# Environment: PYTHON (default: python3 on PATH), SANITIZE_DIR (default
# /tmp/lrfast-asan; wiped and rebuilt each run), SANITIZE_OPT (default -O1).
#
# How: the copy's extensions are compiled with
#   -fsanitize=address,undefined -fno-sanitize-recover=undefined
#   -fno-omit-frame-pointer -g $SANITIZE_OPT
# (setup.py's -O3 is replaced by $SANITIZE_OPT in the copy only). The Python
# interpreter is not instrumented, so libasan is preloaded; leak detection is
# off (CPython keeps objects alive until exit by design); every ASan or UBSan
# report aborts the process, which fails the run. PYTHONMALLOC=malloc routes
# Python objects through malloc so ASan sees them too, and numpy's array
# buffers are malloc'ed: a kernel reading or writing past an array trips ASan.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
DEST="${SANITIZE_DIR:-/tmp/lrfast-asan}"
OPT="${SANITIZE_OPT:--O1}"
CC_BIN="${CC:-gcc}"

case "$DEST" in
  /tmp/*) ;;
  *) echo "sanitize.sh: SANITIZE_DIR must be under /tmp (it is wiped): $DEST" >&2; exit 2 ;;
esac

libasan="$("$CC_BIN" -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
  echo "sanitize.sh: $CC_BIN has no libasan.so (install gcc's sanitizer runtimes)" >&2
  exit 2
fi

echo "=== copying the tree (tracked and untracked, not ignored) to $DEST"
rm -rf "$DEST"
mkdir -p "$DEST"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
   | tar --null -T - -cf -) | (cd "$DEST" && tar -xf -)
# -O3 -> $OPT in the copy only (sanitizers report best at -O1; keep the other flags)
sed -i "s/BASE_FLAGS = \[\"-O3\"/BASE_FLAGS = [\"$OPT\"/" "$DEST/setup.py"
grep -q "BASE_FLAGS = \[\"$OPT\"" "$DEST/setup.py" || {
  echo "sanitize.sh: could not set $OPT in setup.py's BASE_FLAGS" >&2; exit 2; }

echo "=== building with -fsanitize=address,undefined $OPT"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
(cd "$DEST" && CC="$CC_BIN" CFLAGS="$SAN" LDFLAGS="-fsanitize=address,undefined" \
   "$PY" setup.py build_ext -i -q)
for so in "$DEST"/lrfast/_kernels_*.so; do
  syms="$(nm -D "$so")"      # (not piped into grep -q: pipefail + SIGPIPE)
  if [[ "$syms" != *__asan_* ]]; then
    echo "sanitize.sh: $so is not instrumented" >&2; exit 2
  fi
done

echo "=== running pytest ${*:-tests} under ASan + UBSan"
# libstdc++ too: else ASan's __cxa_throw interceptor finds no real one when a C++
# extension (matplotlib's ft2font, torch) throws, and aborts (CHECK failed)
libstdcxx="$("$CC_BIN" -print-file-name=libstdc++.so)"
[ -e "$libstdcxx" ] || libstdcxx=""
export LD_PRELOAD="$libasan${libstdcxx:+:$libstdcxx}${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc
export MPLBACKEND=Agg
cd "$DEST"
"$PY" -c "import lrfast, sys; f = lrfast._dispatch.kernels.__file__; \
print('kernels:', f); sys.exit(0 if f.startswith('$DEST') else 1)"
rc=0
"$PY" -m pytest -q -p no:cacheprovider "${@:-tests}" || rc=$?
if [ "$rc" -eq 0 ]; then
  echo "=== sanitize.sh: clean (no ASan/UBSan report, all selected tests passed)"
else
  echo "=== sanitize.sh: FAILED (pytest exit $rc; exit 134 = aborted by an AddressSanitizer" \
       "or UBSan 'runtime error' report, printed above with its stack)"
fi
exit "$rc"
