#!/usr/bin/env bash
# bundle_test.sh BUNDLER COMMON - tools/openapi-bundle on small documents, good
# and bad (ctest unit.openapi_bundle): a good one bundles with libdeta's paths,
# the guard answers and local references, and its operations listed; a dangling
# reference, a reference to another file and a path in both documents each stop
# it with a message, leaving no output behind.
set -euo pipefail
bundler=$1
common=$2
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/lib/openapi" "$t/services/x"
cp "$common" "$t/lib/openapi/common.json"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

doc() { # doc NAME PATHS-JSON
  printf '{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":%s}\n' "$2" \
    >"$t/services/x/$1.json"
}
bundle() { # bundle NAME: the bundler's status; its stderr in $t/err
  "$bundler" "$t/lib/openapi/common.json" "$t/services/x/$1.json" "$t/out.json" "$t/out.c" \
    2>"$t/err"
}
refused() { # refused NAME MESSAGE
  if bundle "$1"; then
    fail "$1 bundled"
  elif ! grep -q -- "$2" "$t/err"; then
    fail "$1: expected \"$2\", got: $(cat "$t/err")"
  elif [ -e "$t/out.json" ] || [ -e "$t/out.c" ]; then
    fail "$1: output left behind"
  fi
}

ref='"../../lib/openapi/common.json#/components/responses/HealthUp"'
doc good "{\"/x\":{\"get\":{\"responses\":{\"200\":{\"\$ref\":$ref}}}}}"
if bundle good; then
  python3 - "$t/out.json" "$t/out.c" <<'PY' || fail "good: wrong output"
import json, re, sys
d = json.load(open(sys.argv[1]))
op = d["paths"]["/x"]["get"]
assert op["responses"]["200"] == {"$ref": "#/components/responses/HealthUp"}, op
assert sorted(op["responses"]) == ["200", "408", "413", "429", "431", "503"], op
assert "/actuator/health" in d["paths"] and "HealthReport" in d["components"]["schemas"]
c = open(sys.argv[2]).read()
ops = re.search(r"operations\[\] = \{(.*?)\};", c, re.S).group(1)
text = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", ops)).rstrip(b"\0").decode()
assert text.splitlines()[0] == "GET /x" and "GET /openapi.json" in text.splitlines(), text
PY
else
  fail "good: $(cat "$t/err")"
fi
rm -f "$t/out.json" "$t/out.c"

doc dangling '{"/x":{"get":{"responses":{"200":{"$ref":"#/components/responses/Nope"}}}}}'
refused dangling 'resolves to nothing'
doc elsewhere '{"/x":{"get":{"responses":{"200":{"$ref":"other.json#/x"}}}}}'
refused elsewhere 'is to another document'
doc twice '{"/health":{"get":{"responses":{}}}}'
refused twice 'path "/health" is in both documents'

[ "$failures" -eq 0 ] && echo "bundle_test: 4 documents, all as expected"
exit "$failures"
