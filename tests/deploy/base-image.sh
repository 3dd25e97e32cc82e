#!/usr/bin/env bash
# base-image.sh - the debian:12 base image that infra/docker/Dockerfile builds
# FROM, made here from Debian's own packages, for machines that have podman but
# no image registry to pull it from (ours: see infra/README.md, Tests).
#
#   tests/deploy/base-image.sh            make it unless a usable one exists
#   tests/deploy/base-image.sh --force    make it again
#
# Settings (env): DEBIAN_MIRROR (http://deb.debian.org/debian),
# DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security),
# BASE_MAX_AGE_DAYS (7), BASE_WORK_DIR (a temporary directory).
#
# Design.
# - `debootstrap --variant=minbase bookworm` gives the smallest Debian that apt
#   works in (what the official image is made from too). Its apt sources are
#   then made the official image's (bookworm, bookworm-updates and
#   bookworm-security, in /etc/apt/sources.list.d/debian.sources) and it is
#   upgraded from them, since debootstrap installs the release's packages
#   only, without the security updates. The runtime image copies libc and the
#   other libraries out of this base, so they must be current.
# - It is imported as docker.io/library/debian:12 with the label
#   org.delivery-eta.base=debootstrap and the date it was made.
# - The cache: a base this script made is reused while it is younger than
#   BASE_MAX_AGE_DAYS (its packages are at most that old; the Dockerfile's
#   apt-get update brings the build stage's own packages up to date anyway).
#   An older one is made again. A debian:12 that this script did not make
#   (pulled from a registry by its owner) is the real one: used as it is and
#   never replaced. Making the base takes about three minutes.
# - It is larger than the official image (about 120 MB against 75 MB: the
#   official one drops documentation, man pages and locales); nothing of it
#   reaches the service images, whose runtime stage is built FROM scratch.
set -euo pipefail

BASE=docker.io/library/debian:12
LABEL=org.delivery-eta.base
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MAX_AGE_DAYS=${BASE_MAX_AGE_DAYS:-7}

say() { printf 'base-image: %s\n' "$*"; }
die() { printf 'base-image: error: %s\n' "$*" >&2; exit 1; }

# "ours <age in days>", "theirs" or "none".
existing_base() {
  local label created
  if ! podman image exists "$BASE"; then
    echo none
    return
  fi
  label=$(podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$BASE")
  if [ "$label" != debootstrap ]; then
    echo theirs
    return
  fi
  created=$(podman image inspect --format "{{ index .Labels \"$LABEL.created\" }}" "$BASE")
  [[ "$created" =~ ^[0-9]+$ ]] || created=0
  echo "ours $(( ($(date +%s) - created) / 86400 ))"
}

# Debian's own apt sources of the official image, in the deb822 format.
write_sources() {
  local root=$1
  rm -f "$root/etc/apt/sources.list"
  mkdir -p "$root/etc/apt/sources.list.d"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

make_base() {
  local work root
  command -v debootstrap >/dev/null || die "no debootstrap (scripts/deps.sh installs it)"
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  work=${BASE_WORK_DIR:-$(mktemp -d /tmp/deta-base.XXXXXX)}
  root=$work/rootfs
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  say "debootstrap --variant=minbase bookworm from $MIRROR (about three minutes)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  write_sources "$root"
  say "apt-get upgrade from bookworm-updates and bookworm-security"
  {
    chroot "$root" apt-get update &&
      DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get -y -o Dpkg::Options::=--force-confold \
        dist-upgrade &&
      chroot "$root" apt-get clean
  } >"$work/upgrade.log" 2>&1 || { tail -n 20 "$work/upgrade.log" >&2; die "apt-get upgrade failed"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  # The host's resolver settings stay out of the image (the engine mounts its own).
  : >"$root/etc/resolv.conf"
  say "importing it as $BASE"
  tar --numeric-owner -C "$root" -c . |
    podman import --change "LABEL $LABEL=debootstrap" \
      --change "LABEL $LABEL.created=$(date +%s)" --change 'CMD ["bash"]' - "$BASE" >/dev/null
  say "made $BASE ($(podman image inspect --format '{{.Size}}' "$BASE") bytes)"
}

main() {
  local state force=0
  case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) echo "usage: tests/deploy/base-image.sh [--force]" >&2; exit 2 ;;
  esac
  command -v podman >/dev/null || die "no podman (scripts/deps.sh installs it)"
  state=$(existing_base)
  case "$state" in
    theirs)
      say "$BASE exists and was not made here: using it as it is"
      return 0 ;;
    ours\ *)
      if [ "$force" = 0 ] && [ "${state#ours }" -lt "$MAX_AGE_DAYS" ]; then
        say "$BASE made here ${state#ours } day(s) ago: reused (BASE_MAX_AGE_DAYS=$MAX_AGE_DAYS)"
        return 0
      fi ;;
  esac
  make_base
}

main "$@"
