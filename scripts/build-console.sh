#!/usr/bin/env bash
# Builds the operator console's vendored assets from the npm registry packages
# pinned in package.json / package-lock.json (never from a CDN, never by hand):
# htmx for the console's live parts, Swagger UI and ReDoc for /docs and /redoc.
# Output: src/safehold/web/static/vendor/ (gitignored). Idempotent and quick.
set -euo pipefail
cd "$(dirname "$0")/.."

need=(node_modules/htmx.org/dist/htmx.min.js
      node_modules/swagger-ui-dist/swagger-ui-bundle.js
      node_modules/redoc/bundles/redoc.standalone.js
      node_modules/axe-core/axe.min.js)
for f in "${need[@]}"; do
    if [ ! -f "$f" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "build-console: npm is missing; the console is served without its assets" >&2
            exit 0
        fi
        echo "build-console: installing the npm packages (npm ci)"
        npm ci --no-audit --no-fund --loglevel=error
        break
    fi
done

out=src/safehold/web/static/vendor
rm -rf "$out.tmp"
mkdir -p "$out.tmp/swagger-ui" "$out.tmp/redoc"
cp node_modules/htmx.org/dist/htmx.min.js "$out.tmp/htmx.min.js"
cp node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui.css,favicon-32x32.png,oauth2-redirect.html} \
   "$out.tmp/swagger-ui/"
cp node_modules/redoc/bundles/redoc.standalone.js "$out.tmp/redoc/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-console: assets in $out"
