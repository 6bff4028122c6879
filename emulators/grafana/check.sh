#!/usr/bin/env bash
# Validates the dashboards: each JSON type-checks as `satisfies Dashboard` against npm
# @grafana/schema (tsc --noEmit --strict), and every PromQL expression in it parses (promtool).
# Node packages live in a cache folder outside the repository, installed on first use.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/grafana-schema"
PKGS="@grafana/schema@13.2.3 typescript@5.9.3"
if [ "$(cat "$CACHE/.installed" 2>/dev/null)" != "$PKGS" ]; then
  mkdir -p "$CACHE"
  (cd "$CACHE" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent --no-audit --no-fund $PKGS </dev/null)
  printf '%s' "$PKGS" > "$CACHE/.installed"
fi
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
ln -s "$CACHE/node_modules" "$WORK/node_modules"
n=0
for f in "$HERE"/dashboards/*.json; do
  name=$(basename "$f" .json | tr -c 'a-zA-Z0-9\n' '_')
  { echo 'import type { Dashboard } from "@grafana/schema";'
    printf 'export const %s = %s satisfies Dashboard;\n' "$name" "$(cat "$f")"; } > "$WORK/$name.ts"
  # Every expression as a recording rule, with Grafana's variables given concrete values.
  python3 - "$f" > "$WORK/$name.rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    e = e.replace("$__rate_interval", "1m")
    print(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(e)}")
PY
  promtool check rules "$WORK/$name.rules.yml" >/dev/null
  n=$((n + 1))
done
"$CACHE/node_modules/.bin/tsc" --noEmit --strict --skipLibCheck --target es2020 --moduleResolution node "$WORK"/*.ts
echo "dashboards: $n type-checked against @grafana/schema, every PromQL expression parsed"
