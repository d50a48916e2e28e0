"""Niantic's ``.spz``, version 3: the Gaussians quantised to 16 bytes each plus SH, in one gzip stream.

Written from the reference implementation (github nianticlabs/spz, ``src/cc/load-spz.cc``: ``packGaussians``,
``serializePackedGaussians``; ``splat-utils.h``), every field as it does for version 3. The gzip stream
holds a 16-byte header, then each attribute for all points in turn::

    header     magic u32 0x5053474e ("NGSP"), version u32 (3), numPoints u32, shDegree u8,
               fractionalBits u8 (12), flags u8 (0x1 = antialiased training; 0 here), reserved u8 (0)
    positions  N x 3 x 24-bit signed fixed point, little-endian: round(p * 2^12)   (~0.24 mm steps)
    alphas     N x u8: round(sigmoid(opacity) * 255)
    colours    N x 3 x u8: round(f_dc * 0.15 * 255 + 127.5)   (the SH DC coefficient, not RGB; the
               reference's colorScale 0.15 instead of C0 = 0.282 leaves room for DC values outside
               [0, 1] that higher bands bring back)
    scales     N x 3 x u8: round((log_scale + 10) * 16)
    rotations  N x u32 little-endian, "smallest three" of the unit quaternion in x y z w order: bits
               30-31 the index of the largest-magnitude component (made positive: q and -q are one
               rotation), then for each other component in x y z w order, first one highest, 10 bits:
               a sign bit and 9 bits of round(511 * |c| / sqrt(1/2))
    sh         N x (K-1) x 3 x u8, coefficient-major with the colour channel innermost:
               round(c * 128) + 128, then rounded to a bucket of 8 (degree 1: 5 bits kept) or 16
               (degrees 2-3: 4 bits kept), as the reference's default ``sh1Bits=5, shRestBits=4``

Bytes are rounded half away from zero and clipped to [0, 255], as ``std::round`` and the reference's
``toUint8``. The spec's axes are RUB (OpenGL, three.js): +Y up, +Z towards the viewer, so the default
``up`` is ``"y"`` (:mod:`.orientation`); SPZ has no field for another frame, so :func:`read_spz` must be
told the frame a file was written in. Version 4 (zstd streams behind a 32-byte "NGSP" header) is not
written: Spark 2.2 rejects it, and every current reader takes version 3.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from ..errors import SplatgenError
from ..fileio import atomic_write_bytes
from .orientation import DEFAULT_UP, check_up, export_params, from_frame

MAGIC = 0x5053474E
VERSION = 3
FRACTIONAL_BITS = 12
COLOR_SCALE = 0.15
SH1_BITS, SH_REST_BITS = 5, 4
FLAG_ANTIALIASED = 0x1
_HEADER = struct.Struct("<IIIBBBB")
_SQRT1_2 = np.float64(0.7071067811865476)
_SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15}


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round_half_away(x), 0, 255).astype(np.uint8)


def _pack_smallest_three(q_xyzw: np.ndarray) -> np.ndarray:
    """[N, 4] quaternions (x y z w) -> [N] uint32, as ``packQuaternionSmallestThree``."""
    n = q_xyzw.shape[0]
    norm = np.linalg.norm(q_xyzw, axis=1, keepdims=True)
    q = np.where(norm > 0, q_xyzw / np.where(norm > 0, norm, 1.0), np.array([0.0, 0.0, 0.0, 1.0]))
    largest = np.argmax(np.abs(q), axis=1)  # first of equal magnitudes, as the reference's strict '>'
    negate = q[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511.0 * (np.abs(q[:, i]) / _SQRT1_2) + 0.5).astype(np.uint32)
        comp = np.where(keep, (comp << np.uint32(10)) | (negbit << np.uint32(9)) | mag, comp)
    return comp.astype("<u4")


def _unpack_smallest_three(comp: np.ndarray) -> np.ndarray:
    """[N] uint32 -> [N, 4] unit quaternions (x y z w), as ``unpackQuaternionSmallestThree``."""
    comp = comp.astype(np.uint64)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((comp.shape[0], 4))
    for i in range(3, -1, -1):
        keep = largest != i
        mag = (comp & 511).astype(np.float64)
        neg = ((comp >> 9) & 1).astype(bool)
        val = _SQRT1_2 * mag / 511.0
        q[:, i] = np.where(keep, np.where(neg, -val, val), 0.0)
        comp = np.where(keep, comp >> 10, comp)
    q[np.arange(q.shape[0]), largest] = np.sqrt(np.maximum(0.0, 1.0 - (q * q).sum(axis=1)))
    return q


def _quantize_sh(x: np.ndarray, bucket: int) -> np.ndarray:
    q = (_round_half_away(x * 128.0) + 128.0).astype(np.int64)
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def spz_bytes(params: Dict[str, Tensor]) -> bytes:
    """The uncompressed version-3 stream (header + attributes) of finite CPU Gaussians, in their frame."""
    n = params["means"].shape[0]
    k = params["shN"].shape[1]
    degree = {v: d for d, v in _SH_DIM.items()}[k]
    means = params["means"].double().numpy()
    limit = 2 ** (23 - FRACTIONAL_BITS)
    if np.abs(means).max() >= limit:
        raise SplatgenError(f"positions up to {np.abs(means).max():.1f} do not fit SPZ's 24-bit fixed point "
                            f"with {FRACTIONAL_BITS} fractional bits (|x| < {limit})")
    fixed = _round_half_away(means * (1 << FRACTIONAL_BITS)).astype(np.int64) & 0xFFFFFF
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=-1).astype(np.uint8)
    alphas = _to_u8(torch.sigmoid(params["opacities"].double()).numpy() * 255.0)
    colors = _to_u8(params["sh0"].double().reshape(n, 3).numpy() * (COLOR_SCALE * 255.0) + 0.5 * 255.0)
    scales = _to_u8((params["scales"].double().numpy() + 10.0) * 16.0)
    q = params["quats"].double().numpy()
    rotations = _pack_smallest_three(q[:, [1, 2, 3, 0]])  # w x y z -> x y z w
    sh = params["shN"].double().numpy()  # [N, K-1, 3]: coefficient-major, channel innermost already
    sh_bytes = np.empty(sh.shape, dtype=np.uint8)
    if k:
        sh_bytes[:, :3] = _quantize_sh(sh[:, :3], 1 << (8 - SH1_BITS))
        sh_bytes[:, 3:] = _quantize_sh(sh[:, 3:], 1 << (8 - SH_REST_BITS))
    header = _HEADER.pack(MAGIC, VERSION, n, degree, FRACTIONAL_BITS, 0, 0)
    return b"".join([header, positions.tobytes(), alphas.tobytes(), colors.tobytes(), scales.tobytes(),
                     rotations.tobytes(), sh_bytes.tobytes()])


def write_spz(model_or_params, path: str | Path, *, up: str = DEFAULT_UP["spz"]) -> int:
    """Write Gaussians (a :class:`~splatgen.gaussians.GaussianModel` or its ``state()`` dict) as ``.spz`` v3.

    Returns the number of splats written (non-finite rows dropped with a warning). Atomic: a temporary
    file in the same folder, then one rename. The gzip stream has mtime 0, so the same Gaussians give
    the same bytes.

    Raises:
        SplatgenError: unknown ``up``, malformed parameters, no finite Gaussian to write, or positions
            too far from the origin for the fixed-point format (2048 units).
    """
    params = export_params(model_or_params, path, up)
    raw = spz_bytes(params)
    atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))
    return int(params["means"].shape[0])


def read_spz(path: str | Path, *, up: str = DEFAULT_UP["spz"]) -> Dict[str, Tensor]:
    """Read a gzip ``.spz`` (versions 2 and 3) written in the frame of ``up``, into gsplat-layout tensors in
    splatgen's frame: ``means, scales (log), quats (w x y z, unit), opacities (logit), sh0 [N,1,3],
    shN [N,K-1,3]``. Opacity bytes 0 and 255 read as 0.5/255 and 254.5/255 (finite logits).

    Raises:
        SplatgenError: no such file, not gzip, wrong magic, an unsupported version (1 or 4), or too short.
    """
    check_up(up)
    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no .spz file at {path}")
    blob = path.read_bytes()
    if blob[:4] == struct.pack("<I", MAGIC):
        raise SplatgenError(f"{path} is an SPZ version 4 file (zstd streams); splatgen reads versions 2 and 3")
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise SplatgenError(f"{path} is not a gzip .spz file ({exc})") from None
    if len(raw) < _HEADER.size:
        raise SplatgenError(f"{path} is not an .spz file: {len(raw)} bytes after gunzip")
    magic, version, n, degree, frac, _flags, _reserved = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise SplatgenError(f"{path} is not an .spz file (magic 0x{magic:08x}, expected 0x{MAGIC:08x})")
    if version not in (2, 3) or degree not in _SH_DIM:
        raise SplatgenError(f"{path}: SPZ version {version} with SH degree {degree} is not supported "
                            "(versions 2-3, degrees 0-3)")
    k = _SH_DIM[degree]
    rot_bytes = 4 if version >= 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * k * n]
    if len(raw) - _HEADER.size < sum(sizes):  # extension records (flag 0x2) may follow: ignored
        raise SplatgenError(f"{path}: {len(raw) - _HEADER.size} bytes of data, {sum(sizes)} needed for {n} points")
    parts, at = [], _HEADER.size
    for size in sizes:
        parts.append(np.frombuffer(raw, dtype=np.uint8, count=size, offset=at))
        at += size
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = parts
    pb = pos_b.reshape(n, 3, 3).astype(np.int64)
    fixed = pb[..., 0] | (pb[..., 1] << 8) | (pb[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    if version >= 3:
        q = _unpack_smallest_three(rot_b.view("<u4"))
    else:
        xyz = rot_b.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        q = np.concatenate([xyz, np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(1, keepdims=True)))], axis=1)
    alpha = np.clip(alpha_b.astype(np.float64), 0.5, 254.5) / 255.0
    f32 = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731  (a writable copy)
    params = {
        "means": f32(fixed / float(1 << frac)),
        "scales": f32(scale_b.reshape(n, 3) / 16.0 - 10.0),
        "quats": f32(q[:, [3, 0, 1, 2]]),
        "opacities": f32(np.log(alpha / (1.0 - alpha))),
        "sh0": f32((color_b.reshape(n, 3) / 255.0 - 0.5) / COLOR_SCALE).reshape(n, 1, 3),
        "shN": f32((sh_b.reshape(n, k, 3).astype(np.float64) - 128.0) / 128.0),
    }
    return from_frame(params, up)
