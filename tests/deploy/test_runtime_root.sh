#!/usr/bin/env bash
# test_runtime_root.sh - infra/docker/runtime-root.sh, the assembler of the
# images' root file system, run on this machine's own binaries, without podman:
#
#   test_runtime_root.sh SERVICE_BINARY PROBE_BINARY
#
# - the root it assembles runs the service's libraries from itself alone: in a
#   chroot of it, the loader it copied lists every library of the service as
#   found (chroot: no library of the host can stand in for a missing one);
# - it has the user 10001, the CA bundle, the dpkg records and no shell;
# - a program that needs a library that is not installed stops it with the
#   library's name (a program linked to a library made here, then removed).
# Needs root (chroot) and gcc; exits 77 (skipped) without root.
set -euo pipefail

SERVICE_BIN=${1:?usage: test_runtime_root.sh SERVICE_BINARY PROBE_BINARY}
PROBE_BIN=${2:?usage: test_runtime_root.sh SERVICE_BINARY PROBE_BINARY}
ROOTFS_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/infra/docker/runtime-root.sh
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

if [ "$(id -u)" -ne 0 ]; then
  echo "test_runtime_root: needs root (chroot): skipped"
  exit 77
fi
TMP=$(mktemp -d /tmp/deta-runtime-root.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# 1. The service and the probe.
R=$TMP/root
install -D -m 0755 "$SERVICE_BIN" "$R/usr/local/bin/service"
install -m 0755 "$PROBE_BIN" "$R/usr/local/bin/deta-healthcheck"
ln -s service "$R/usr/local/bin/deta-service"
"$ROOTFS_SH" "$R" >"$TMP/assemble.out" 2>&1 || { cat "$TMP/assemble.out" >&2; fail "assembling failed"; }
interp=$(readelf -l "$SERVICE_BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
if ! listed=$(chroot "$R" "$interp" --list /usr/local/bin/service 2>&1); then
  fail "the loader in the root cannot list the service's libraries: $listed"
elif grep -q 'not found' <<<"$listed"; then
  fail "libraries missing from the root: $(grep 'not found' <<<"$listed" | tr -s ' \t' ' ')"
fi
needed=$(ldd "$SERVICE_BIN" | grep -c '=>')
found=$(grep -c '=> /' <<<"$listed" || true)
[ "$found" -eq "$needed" ] || fail "the root resolves $found libraries, the host $needed"
grep -q '^deta:x:10001:10001:' "$R/etc/passwd" || fail "no user 10001 in /etc/passwd"
[ -s "$R/etc/ssl/certs/ca-certificates.crt" ] || fail "no CA bundle"
[ -s "$R/var/lib/dpkg/status.d/libc6" ] || fail "no dpkg record of libc6"
grep -q '^Package: libc6$' "$R/var/lib/dpkg/status.d/libc6" || fail "the libc6 record is not dpkg's"
for f in bin/sh usr/bin/sh bin/bash usr/bin/dpkg; do
  if [ -e "$R/$f" ]; then fail "the root has /$f"; fi
done

# 2. A library that is not there: the assembly must stop and name it.
mkdir -p "$TMP/lib" "$TMP/bad/usr/local/bin"
printf 'int deta_gone(void) { return 7; }\n' >"$TMP/lib/gone.c"
printf 'int deta_gone(void);\nint main(void) { return deta_gone(); }\n' >"$TMP/lib/main.c"
gcc -shared -fPIC -o "$TMP/lib/libdetagone.so" "$TMP/lib/gone.c"
gcc -o "$TMP/bad/usr/local/bin/prog" "$TMP/lib/main.c" -L"$TMP/lib" -ldetagone -Wl,-rpath,"$TMP/lib"
rm "$TMP/lib/libdetagone.so"
if "$ROOTFS_SH" "$TMP/bad" >"$TMP/bad.out" 2>&1; then
  fail "assembling a program whose library is gone succeeded"
elif ! grep -q 'libdetagone.so' "$TMP/bad.out"; then
  fail "the failure does not name the missing library: $(cat "$TMP/bad.out")"
fi

if [ "$FAILS" -gt 0 ]; then exit 1; fi
echo "test_runtime_root: ok ($found libraries resolved inside the root; a missing one is refused)"
