#!/usr/bin/env bash
# The container image's build step, also run by CI outside Docker: installs dependencies,
# compiles, and puts the production install (dist/, production node_modules, package.json)
# into DEST. Run from a source tree.
set -euo pipefail
dest="${1:?usage: image-build.sh DEST}"
npm ci --no-audit --no-fund
npm run build
mkdir -p "$dest"
cp -r package.json package-lock.json dist "$dest/"
(cd "$dest" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund)
