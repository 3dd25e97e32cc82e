#!/usr/bin/env bash
# make-env.sh - write a settings file from a template, with a fresh random
# password wherever the template says `change-me` (the passwords, and the
# operator and reader tokens OPERATOR_TOKEN and READER_TOKEN, which take the same
# form).
#
#   infra/make-env.sh compose/.env.example compose/.env   # docker compose
#   infra/make-env.sh k8s/secrets.env.example k8s/secrets.env   # kubectl apply -k
#
# Refuses to overwrite an existing file (its passwords may already be in a
# database). Passwords are 48 hex digits (192 bits) from /dev/urandom: no
# character that needs quoting in an env file, a YAML value or a URL. The
# output is readable by its owner only.
set -euo pipefail

die() { echo "make-env.sh: $*" >&2; exit 1; }

random_password() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

main() {
  [ $# -eq 2 ] || die "usage: make-env.sh TEMPLATE OUTPUT"
  local template=$1 output=$2 line count=0
  [ -f "$template" ] || die "no template at $template"
  [ ! -e "$output" ] || die "$output exists: not overwriting it (delete it first)"
  umask 077
  local tmp
  tmp=$(mktemp "$output.XXXXXX")
  # ${tmp:-}: the trap runs at exit, after main's locals are gone (set -u).
  trap 'rm -f "${tmp:-}"' EXIT
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=change-me$ ]]; then
      line="${BASH_REMATCH[1]}=$(random_password)"
      count=$((count + 1))
    fi
    printf '%s\n' "$line" >>"$tmp"
  done <"$template"
  mv "$tmp" "$output"
  echo "make-env.sh: wrote $output ($count random password(s))"
}

main "$@"
