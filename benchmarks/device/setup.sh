# Source this at the start of every command on the GPU machine (see benchmarks/README.md):
#   source benchmarks/device/setup.sh
# It installs the carried wheels (.whl/, or .whlxz/site.tar.xz: the same unpacked and compressed) into /tmp/site,
# and either loads a gsplat CUDA extension carried
# from an earlier call (.gsplat_build/gsplat_cuda.so, or xz-compressed as .gsplat_xz/gsplat_cuda.so.xz: 2 MB
# instead of 16 MB, which keeps the carried tree under the 64 MiB limit) or builds it once (about 70 s on the
# H100) and puts it, xz-compressed, in $OUT so the next call can carry it (.gsplat_xz/).
set -e
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
elif [ -f .whlxz/site.tar.xz ] || [ -f .whlxz_full/site.tar.xz ]; then
  # The same wheels unpacked into one folder and xz-compressed (9 MB instead of 18 MB of wheels: the carried tree
  # must stay under 64 MiB beside the 45 MB bundled prior). Make it here with:
  #   mkdir flat && for w in .whl/*.whl; do (cd flat && unzip -qo ../$w); done && rm -r flat/gsplat/cuda/csrc \
  #     && tar -cf - -C flat . | xz -9e > .whlxz/site.tar.xz
  # Leaving out gsplat's CUDA sources (25 MB unpacked; 5.5 MB instead of 9 MB compressed) keeps the tree under the
  # limit beside the results; it then needs the carried build (.gsplat_xz) as gsplat cannot build itself there.
  # .whlxz_full/site.tar.xz: the same with gsplat's CUDA sources, for a session's first call (no build carried yet);
  # leave out glm's doc/ and test/ (rm -r flat/gsplat/cuda/csrc/third_party/glm/{doc,test}: 4.3 MB instead of
  # 7.6 MB compressed, which the 59.5 MB tree of 2026-12-07 needs to stay under the 64 MiB a call carries).
  tarball=.whlxz/site.tar.xz; [ -f "$tarball" ] || tarball=.whlxz_full/site.tar.xz
  mkdir -p /tmp/site && tar -xJf "$tarball" -C /tmp/site
else
  echo "setup.sh: no wheels carried (.whl/*.whl or .whlxz/site.tar.xz)" >&2
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch_ext
# Register the repository's triton_kernels/ folder under its import name (an editable install does this).
python3 benchmarks/device/link_kernels.py /tmp/site
if [ ! -f .gsplat_build/gsplat_cuda.so ] && [ -f .gsplat_xz/gsplat_cuda.so.xz ]; then
  mkdir -p .gsplat_build && python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.gsplat_xz/gsplat_cuda.so.xz'), open('.gsplat_build/gsplat_cuda.so', 'wb'))"
fi
if [ -f .gsplat_build/gsplat_cuda.so ]; then
  cp benchmarks/device/sitecustomize.py /tmp/site/sitecustomize.py
  export GSPLAT_PREBUILT_SO=$PWD/.gsplat_build/gsplat_cuda.so
else
  t0=$(date +%s)
  python3 -c "import gsplat.cuda._backend as b; assert b._C is not None, 'gsplat CUDA build failed'"
  echo "gsplat JIT build: $(( $(date +%s) - t0 )) s"
  # back to this machine xz-compressed, for the next call's .gsplat_xz/
  if [ -n "${OUT:-}" ]; then xz -T0 -6 -c /tmp/torch_ext/gsplat_cuda/gsplat_cuda.so > "$OUT/gsplat_cuda.so.xz"; fi
fi
set +e
