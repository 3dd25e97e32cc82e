#!/bin/bash
# runtime-root.sh - the whole root file system of a service image, assembled
# in the build stage of infra/docker/Dockerfile and copied into an empty
# (FROM scratch) runtime stage.
#
#   runtime-root.sh ROOT
#
# ROOT/usr/local/bin holds the programs already (the service and the probe).
# This adds what they need to run and nothing else:
# - every shared library they load, found by ldd (the dynamic loader's own
#   list, recursively resolved), copied from this Debian system into
#   /usr/lib/x86_64-linux-gnu (and the loader to its ELF interpreter path),
#   with Debian 12's merged-/usr links (/lib -> usr/lib, /lib64 -> usr/lib64);
#   a library that ldd cannot find stops the build. libgcc_s.so.1 comes too:
#   glibc opens it at run time (thread cancellation, unwinding), ldd cannot
#   see that;
# - /etc/passwd and /etc/group naming root and the service user 10001 (libpq
#   looks the user up), /etc/nsswitch.conf (files, then DNS), an empty /tmp
#   (mode 1777), and Debian's CA bundle at /etc/ssl/certs/ca-certificates.crt
#   with OpenSSL's default paths pointing at it (TLS to Kafka or Postgres);
# - for each Debian package a copied file came from, its dpkg record in
#   /var/lib/dpkg/status.d/<package> and its copyright file: the layout
#   "distroless" images use, which image scanners read to report the packages
#   and versions inside (no dpkg database, no dpkg).
# No shell, no coreutils, no package manager: nothing to exec but the service
# and the probe. See infra/docker/README.md for why.
set -euo pipefail

ROOT=${1:?usage: runtime-root.sh ROOT}
BIN=$ROOT/usr/local/bin
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
LIBDIR=/usr/lib/$MULTIARCH

die() { echo "runtime-root.sh: $*" >&2; exit 1; }

declare -A SOURCES=()   # file copied (path on this system) -> 1
declare -A PACKAGES=()  # Debian package -> 1

# Copies the library PATH to ROOT under the path the loader looks it up by
# (its directory made canonical: /lib/x -> /usr/lib/x), as a plain file.
copy_library() {
  local path=$1 dest
  dest=$ROOT$(realpath "$(dirname "$path")")/$(basename "$path")
  [ -e "$dest" ] && return 0
  mkdir -p "$(dirname "$dest")"
  cp -L "$path" "$dest"
  SOURCES[$path]=1
}

# The libraries of one ELF file, one path per line (the interpreter too).
libraries_of() {
  local file=$1 out
  if ! out=$(ldd "$file" 2>&1); then
    case "$out" in *"not a dynamic executable"*) return 0 ;; esac
    die "ldd $file: $out"
  fi
  if grep -q 'not found' <<<"$out"; then
    die "$(basename "$file") needs a library that is not installed: $(grep 'not found' <<<"$out")"
  fi
  # "libx.so.1 => /path (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
  sed -n -e 's/^[[:space:]]*[^[:space:]]* => \(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p' \
         -e 's/^[[:space:]]*\(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p' <<<"$out"
}

# The Debian package that installed PATH (dpkg knows a file by the path its
# package ships, which merged /usr may have moved: try both spellings).
package_of() {
  local path=$1 real candidates p out
  real=$(realpath "$path")
  candidates=("$path" "$real" "${real#/usr}")
  for p in "${candidates[@]}"; do
    if out=$(dpkg-query -S "$p" 2>/dev/null); then
      printf '%s\n' "${out%%:*}"
      return 0
    fi
  done
  die "no Debian package owns $path"
}

copy_programs_libraries() {
  local prog lib libs
  for prog in "$BIN"/*; do
    [ -L "$prog" ] && continue
    # Not `< <(libraries_of ...)`: its failure would stay in the subshell.
    libs=$(libraries_of "$prog") || exit 1
    for lib in $libs; do copy_library "$lib"; done
  done
  lib=$(gcc -print-file-name=libgcc_s.so.1)
  [ -e "$lib" ] || lib=$LIBDIR/libgcc_s.so.1
  copy_library "$(realpath "$lib")"
  # Debian 12's merged /usr: the loader's path /lib64/... and /lib/... lead there.
  if [ ! -e "$ROOT/lib" ]; then ln -s usr/lib "$ROOT/lib"; fi
  if [ -d "$ROOT/usr/lib64" ] && [ ! -e "$ROOT/lib64" ]; then ln -s usr/lib64 "$ROOT/lib64"; fi
}

write_etc() {
  mkdir -p "$ROOT/etc" "$ROOT/tmp"
  chmod 1777 "$ROOT/tmp"
  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
    'deta:x:10001:10001:delivery-eta service:/nonexistent:/usr/sbin/nologin' >"$ROOT/etc/passwd"
  printf '%s\n' 'root:x:0:' 'deta:x:10001:' >"$ROOT/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$ROOT/etc/nsswitch.conf"
  mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/usr/lib/ssl"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  SOURCES[/usr/share/ca-certificates]=1
  ln -sfn /etc/ssl/certs/ca-certificates.crt "$ROOT/usr/lib/ssl/cert.pem"
  ln -sfn /etc/ssl/certs "$ROOT/usr/lib/ssl/certs"
}

write_package_records() {
  local src pkg name
  for src in "${!SOURCES[@]}"; do
    PACKAGES[$(package_of "$src")]=1
  done
  mkdir -p "$ROOT/var/lib/dpkg/status.d"
  for pkg in "${!PACKAGES[@]}"; do
    name=${pkg%%:*}
    dpkg-query -s "$pkg" >"$ROOT/var/lib/dpkg/status.d/$name"
    if [ -f "/usr/share/doc/$name/copyright" ]; then
      mkdir -p "$ROOT/usr/share/doc/$name"
      cp "/usr/share/doc/$name/copyright" "$ROOT/usr/share/doc/$name/copyright"
    fi
  done
}

main() {
  [ -d "$BIN" ] || die "$BIN: no programs to assemble a root for"
  copy_programs_libraries
  write_etc
  write_package_records
  echo "runtime-root.sh: $(find "$ROOT" -type f | wc -l) files," \
    "$(du -sk "$ROOT" | cut -f1) KiB, packages: $(printf '%s\n' "${!PACKAGES[@]}" | sort | tr '\n' ' ')"
}

main "$@"
