#!/usr/bin/env bash
# Install test: `make install` into a fresh prefix, then build
# examples/minimal.c against it as a user would, with pkg-config: once
# against libebt.so, once against libebt.a, and run both. Checks the
# installed files, the SONAME, that pkg-config's version is ebt.h's
# EBT_VERSION and that the library's ebt_version() equals the header's.
# Usage: bash tests/install_test.sh   (`make test` runs it; CC and
# EXTRA_CFLAGS, e.g. the sanitizer flags of `make asan`, come from the
# environment, and the make that installs inherits the caller's variables)
set -euo pipefail
cd "$(dirname "$0")/.."
cc="${CC:-cc}"
read -r -a extra <<< "${EXTRA_CFLAGS:-}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
prefix="$dir/prefix"
log="$dir/log"
fail() { echo "install test FAILED: $*"; exit 1; }
run() {  # run <what> <command...>: output to $log; on failure, show its start
    local what="$1"; shift
    if ! "$@" > "$log" 2>&1; then
        echo "install test FAILED: $what"
        head -n 20 "$log" | sed "s/^/    /"
        exit 1
    fi
}

# the header's version, as a program sees it
printf '#include <stdio.h>\n#include "ebt.h"\nint main(void) { puts(EBT_VERSION); return 0; }\n' > "$dir/v.c"
run "compiling a program printing EBT_VERSION" "$cc" -I. -o "$dir/v" "$dir/v.c"
version=$("$dir/v")
major=${version%%.*}

run "make install PREFIX=$prefix" "${MAKE:-make}" install PREFIX="$prefix" DESTDIR= \
    INCLUDEDIR="$prefix/include" LIBDIR="$prefix/lib" PKGCONFIGDIR="$prefix/lib/pkgconfig"
lib="$prefix/lib"
cmp -s ebt.h "$prefix/include/ebt.h" || fail "$prefix/include/ebt.h is not ebt.h"
for f in libebt.a "libebt.so.$version" pkgconfig/ebt.pc; do
    [ -f "$lib/$f" ] && [ ! -L "$lib/$f" ] || fail "$lib/$f missing (or not a file)"
done
for f in "libebt.so.$major" libebt.so; do
    [ "$(readlink "$lib/$f")" = "libebt.so.$version" ] || fail "$lib/$f is not a symlink to libebt.so.$version"
done
soname=$(readelf -d "$lib/libebt.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libebt.so.$major" ] || fail "SONAME of libebt.so.$version is '$soname', not libebt.so.$major"

export PKG_CONFIG_PATH="$lib/pkgconfig"
run "pkg-config --modversion ebt" pkg-config --modversion ebt
pcversion=$(cat "$log")
[ "$pcversion" = "$version" ] || fail "pkg-config --modversion ebt is '$pcversion', ebt.h says '$version'"
read -r -a shared <<< "$(pkg-config --cflags --libs ebt)"
read -r -a static <<< "$(pkg-config --static --cflags --libs ebt | sed 's/-lebt/-l:libebt.a/')"

check_run() {  # check_run <what> <command...>: exits 0 and reports the same version twice
    local what="$1"; shift
    run "$what: running $*" "$@" "$dir/minimal.safetensors"
    local first; first=$(head -n 1 "$log")
    [ "$first" = "ebt library $version, header $version" ] ||
        fail "$what: says '$first', expected 'ebt library $version, header $version'"
    [ ! -e "$dir/minimal.safetensors" ] || fail "$what: left its checkpoint behind"
}

# against libebt.so: only -lebt (its own NEEDED entries bring OpenBLAS, OpenMP)
run "building against libebt.so: $cc examples/minimal.c ${shared[*]}" \
    "$cc" "${extra[@]}" -o "$dir/minimal_shared" examples/minimal.c "${shared[@]}"
# (outputs captured first: grep -q closing a pipe early fails it under pipefail)
out=$(readelf -d "$dir/minimal_shared")
grep -q "(NEEDED).*\[libebt.so.$major\]" <<< "$out" || fail "minimal_shared does not need libebt.so.$major"
out=$(LD_LIBRARY_PATH="$lib" ldd "$dir/minimal_shared")
grep -q "libebt.so.$major => $lib/libebt.so.$major " <<< "$out" ||
    fail "minimal_shared does not load $lib/libebt.so.$major"
LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" check_run "shared" "$dir/minimal_shared"

# against libebt.a: Libs.private must bring everything it needs (-fopenmp, BLAS, libm)
run "building against libebt.a: $cc examples/minimal.c ${static[*]}" \
    "$cc" "${extra[@]}" -o "$dir/minimal_static" examples/minimal.c "${static[@]}"
out=$(readelf -d "$dir/minimal_static")
if grep -q "(NEEDED).*\[libebt" <<< "$out"; then fail "minimal_static needs a shared libebt"; fi
check_run "static" "$dir/minimal_static"

echo "installed into a fresh prefix; minimal.c built with pkg-config against libebt.so (SONAME libebt.so.$major) and libebt.a, ran, version $version: 1 passed, 0 failed"
