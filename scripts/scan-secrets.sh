#!/usr/bin/env bash
# scan-secrets.sh - no secret of a stack appears in what its run left behind
# (docs/security.md, "Secrets stay secret").
#
#   scripts/scan-secrets.sh STACK_DIR [PATH...]
#
# The secrets are the values in STACK_DIR/secrets.env (scripts/stack.sh writes it,
# mode 0600, beside stack.env, and keeps it after `down` until `clean`) of every
# variable whose name ends in _PASSWORD or _TOKEN and whose value has at least 8
# characters (shorter ones would match by chance). The files searched are the
# stack's logs (STACK_DIR/logs/ and STACK_DIR/*.out) and every regular file below
# each PATH (ctest's logs, for instance), as bytes. Each value is searched as a
# fixed string; a hit is reported as "file:line: <VARIABLE>", never with the value
# itself or the line's text (several lines: "file:12,40: <VARIABLE>"), so that this
# script's own output leaks nothing.
# Exit status: 0 nothing found, 1 a secret was found, 2 usage (no secrets.env, or
# no secret in it: a scan that would look for nothing proves nothing).
set -euo pipefail

die() { echo "scan-secrets.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: scan-secrets.sh STACK_DIR [PATH...]"
stack_dir=$1
shift
secrets=$stack_dir/secrets.env
[ -r "$secrets" ] || die "no $secrets (written by scripts/stack.sh while the stack runs)"

# KEY=value or KEY='value' (stack.sh's env_line quoting: ' written as '\'').
names=() values=()
while IFS= read -r line || [ -n "$line" ]; do
  [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
  name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
  case "$name" in *_PASSWORD | *_TOKEN) ;; *) continue ;; esac
  if [[ $value == \'*\' ]]; then
    value=${value:1:${#value}-2}
    value=${value//\'\\\'\'/\'}
  fi
  [ "${#value}" -ge 8 ] || continue
  names+=("$name") values+=("$value")
done <"$secrets"
[ "${#values[@]}" -gt 0 ] || die "$secrets has no secret of 8 or more characters"

files=()
[ -d "$stack_dir/logs" ] && files+=("$stack_dir/logs")
for f in "$stack_dir"/*.out; do [ -f "$f" ] && files+=("$f"); done
for p in "$@"; do [ -e "$p" ] && files+=("$p"); done
[ "${#files[@]}" -gt 0 ] || die "nothing to search in $stack_dir or ${*:-}"

found=0
for i in "${!values[@]}"; do
  # -r below directories, -a binary as text, -F a fixed string; only the file's name
  # and the line numbers (cut from grep -n's "line:text") are printed.
  while IFS= read -r file; do
    lines=$(grep -naF -e "${values[$i]}" -- "$file" | cut -d: -f1 | head -20 | paste -sd, -)
    printf '%s:%s: %s\n' "$file" "$lines" "${names[$i]}"
    found=1
  done < <(grep -rlaF -e "${values[$i]}" -- "${files[@]}" || true)
done
if [ "$found" = 1 ]; then
  echo "scan-secrets.sh: secrets of $stack_dir found in the files above (values not shown)" >&2
  exit 1
fi
echo "scan-secrets.sh: none of the ${#values[@]} secrets of $stack_dir appears in ${files[*]}"
