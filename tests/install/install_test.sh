#!/usr/bin/env bash
# The installed moe, as a program outside the tree sees it: installs the
# build into a fresh prefix under WORK_DIR, then checks
#   - libmoe.so: its SONAME, and that it exports exactly the functions the
#     public headers declare (the version script's list), nothing internal;
#   - each public header compiles on its own (twice included, C11 with
#     -Wall -Wextra -Wpedantic -Werror, and as C++ when a C++ compiler is there);
#   - tests/install/example.c built with pkg-config (libmoe.so, and libmoe.a
#     with --static) and with find_package (moe::moe, moe::moe_static), each
#     run on the tiny OLMoE fixture to the ids transformers produced;
#   - the installed bin/moe runs.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR WORK_DIR CC PKG_CONFIG "EXTRA_FLAGS"
# (EXTRA_FLAGS: the build's sanitizer flags, which a program linking its
# library must use too). Needs no network and no root.
set -euo pipefail
build=$1 src=$2 work=$3 cc=$4 pkgconfig=$5
read -r -a flags <<< "${6:-}"
model=$src/tests/fixtures/olmoe/base
example=$src/tests/install/example.c
passed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
die() { echo "FAIL - $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" > "$work/install.log" || { cat "$work/install.log"; die "cmake --install"; }
pc=$(find "$prefix" -name moe.pc)
[ -n "$pc" ] || die "no moe.pc installed under $prefix"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$("$pkgconfig" --variable=libdir moe)
for f in "$prefix/bin/moe" "$libdir/libmoe.a" "$libdir/libmoe.so" "$libdir/cmake/moe/moeConfig.cmake" \
         "$prefix/include/moe/model.h"; do
  [ -e "$f" ] || die "$f was not installed"
done
ok "installed into $prefix (libdir $libdir)"

# the shared library: its SONAME, and its exports are the public API exactly
soname=$(readelf -d "$libdir/libmoe.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname =~ ^libmoe\.so\.[0-9]+(\.[0-9]+)?$ ]] || die "libmoe.so's SONAME is '$soname'"
[ -e "$libdir/$soname" ] || die "$libdir/$soname (the SONAME) is missing"
sed -n 's/^ *\(moe_[A-Za-z0-9_]*\);$/\1/p' "$build/moe.map" | sort > "$work/declared.txt"
nm -D --defined-only "$libdir/libmoe.so" | awk '{print $NF}' | sed 's/@.*//' | sort -u > "$work/exported.txt"
extra=$(comm -13 "$work/declared.txt" "$work/exported.txt" | tr '\n' ' ')
missing=$(comm -23 "$work/declared.txt" "$work/exported.txt" | tr '\n' ' ')
[ -z "$extra" ] || die "libmoe.so exports symbols no public header declares: $extra"
[ -z "$missing" ] || die "the public headers declare functions libmoe.so does not define: $missing"
[ "$(wc -l < "$work/declared.txt")" -gt 50 ] || die "only $(wc -l < "$work/declared.txt") functions in $build/moe.map"
ok "$soname exports the $(wc -l < "$work/declared.txt") functions of the public headers and nothing else"

# each public header on its own, as C and as C++
cxx=$(command -v c++ || true)
for h in "$prefix"/include/moe/*.h; do
  name=moe/$(basename "$h")
  printf '#include <%s>\n#include <%s>\nint main(void) { return 0; }\n' "$name" "$name" > "$work/header.c"
  "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$prefix/include" "$work/header.c" \
    || die "$name does not compile on its own as C11"
  if [ -n "$cxx" ]; then
    "$cxx" -x c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$work/header.c" \
      || die "$name does not compile on its own as C++"
  fi
done
ok "each of $(ls "$prefix"/include/moe/*.h | wc -l) public headers compiles alone (C11${cxx:+ and C++})"

run() {  # run BINARY WHAT: the example on the fixture must print the reference ids
  local out
  out=$("$1" "$model" 2>&1) || die "$2: the example failed: $out"
  [[ $out == *"173 62 30 155 228 192 193 136 97 55 (the reference ids)"* ]] || die "$2: $out"
  ok "$2: $out"
}
needs_libmoe() { readelf -d "$1" | grep -q 'NEEDED.*\[libmoe\.so'; }

# pkg-config, shared library (found at run time through the rpath)
"$cc" "${flags[@]}" "$example" -o "$work/example-pc-shared" $("$pkgconfig" --cflags --libs moe) -Wl,-rpath,"$libdir" \
  || die "building against libmoe.so with pkg-config --cflags --libs moe"
needs_libmoe "$work/example-pc-shared" || die "example-pc-shared does not load libmoe.so"
run "$work/example-pc-shared" "pkg-config, libmoe.so"

# pkg-config --static, libmoe.a named over libmoe.so (-l:libmoe.a)
static_libs=$("$pkgconfig" --static --libs moe | sed -E 's/(^| )-lmoe( |$)/\1-l:libmoe.a\2/')
"$cc" "${flags[@]}" "$example" -o "$work/example-pc-static" $("$pkgconfig" --cflags moe) $static_libs \
  || die "building against libmoe.a with pkg-config --static --libs moe ($static_libs)"
! needs_libmoe "$work/example-pc-static" || die "example-pc-static loads libmoe.so"
run "$work/example-pc-static" "pkg-config --static, libmoe.a"

# find_package(moe) from a CMake project outside the tree
gen=()
command -v ninja > /dev/null && gen=(-G Ninja)
cmake -S "$src/tests/install/consumer" -B "$work/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" -DEXAMPLE_SOURCE="$example" \
  -DCMAKE_C_FLAGS="${flags[*]}" -DCMAKE_EXE_LINKER_FLAGS="${flags[*]}" > "$work/consumer.log" 2>&1 \
  && cmake --build "$work/consumer" >> "$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; die "find_package(moe) consumer"; }
needs_libmoe "$work/consumer/example_shared" || die "the find_package example_shared does not load libmoe.so"
! needs_libmoe "$work/consumer/example_static" || die "the find_package example_static loads libmoe.so"
run "$work/consumer/example_shared" "find_package, moe::moe"
run "$work/consumer/example_static" "find_package, moe::moe_static"

# the installed command
out=$("$prefix/bin/moe" generate --model "$model" --tokens 51,130,212 -n 2 --ignore-eos --json 2>&1) \
  || die "installed bin/moe: $out"
[[ $out == *'"ids":['* ]] || die "installed bin/moe printed: $out"
ok "installed bin/moe generates"

echo "install test: $passed passed, 0 failed"
