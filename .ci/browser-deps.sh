#!/usr/bin/env bash
# Browser test dependencies (tests/test_browser.py, benchmarks/export_formats.py), installed OUTSIDE the
# repository: Debian's headless Chromium (WebGL through SwiftShader, no GPU needed) and the npm splat
# viewers the pages load. Safe to run again: apt and npm skip what is already there.
#
#   SPLATGEN_WEB_DEPS  where the npm packages go (default ~/.cache/splatgen-web); the tests read the same
#                      variable, so set it for both or for neither.
set -euo pipefail
WEB="${SPLATGEN_WEB_DEPS:-$HOME/.cache/splatgen-web}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WEB_ABS="$(realpath -m "$WEB")"
if [[ "$WEB_ABS/" == "$REPO/"* ]]; then  # node_modules must never land in the repository
  echo "browser-deps: SPLATGEN_WEB_DEPS=$WEB_ABS is inside the repository; choose a folder outside it" >&2
  exit 2
fi
mkdir -p "$WEB_ABS"

export DEBIAN_FRONTEND=noninteractive
# chromium: the browser (its SwiftShader gives WebGL without a GPU); nodejs/npm: only to fetch the viewers from
# the npm registry. Only what is missing is installed (a machine's own Node.js is left alone).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Pinned so a screenshot today is a screenshot tomorrow. What each one is for:
#   three                          the WebGL scene graph Spark and GaussianSplats3D draw into
#   @sparkjsdev/spark              three.js splat renderer: .ply, .splat, .spz
#   @mkkellogg/gaussian-splats-3d  three.js splat viewer: .ply, .splat (a second, independent reader)
#   babylonjs, babylonjs-loaders   Babylon.js (UMD builds): reads glTF KHR_gaussian_splatting (.glb)
#   gltf-validator                 Khronos' glTF-Validator (run by node): the .glb's core glTF structure
cd "$WEB_ABS"
[ -f package.json ] || echo '{"name": "splatgen-web-deps", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error \
  three@0.180.0 @sparkjsdev/spark@2.2.0 @mkkellogg/gaussian-splats-3d@0.4.7 \
  babylonjs@9.28.0 babylonjs-loaders@9.28.0 gltf-validator@2.0.0-dev.3.10
echo "browser-deps: chromium $(chromium --version 2>/dev/null | awk '{print $2}'), web packages in $WEB_ABS"
