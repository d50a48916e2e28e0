"""Training data of the bundled prior: views of the procedural world's objects with their captions.

Every view is an object of the world (:func:`splatgen.world.make_object`) seen by a camera of the camera
sampler (:func:`splatgen.cameras.sample_orbit_cameras` with the default config's ranges: elevation
[-10, 45] deg, radius [2, 2.5], fovy [40, 50] deg), ray cast by :func:`splatgen.world.render_world` over
white, 2x2 supersampled (the anti-aliasing of the oracle prior and of the ground truth of the metrics).
Its caption is ``"<a|an> <colour> <kind>, <direction> view"`` with the direction the camera gives
(:attr:`splatgen.cameras.Cameras.directions`), i.e. exactly the view-dependent prompt the trainer builds.

Ids instead of strings. A view carries a *pair* id (kind x colour, :class:`CaptionTable`) and a
*direction* id (the index in ``DIRECTIONS``); captions are ids into :class:`CaptionTable`, whose texts are
encoded once. Caption variants used to train the diffusion model (plain prompt without direction, prompt
without colour, empty prompt for classifier-free guidance) are other ids of the same table.

Held out. :data:`HELD_OUT_PAIRS` (15 of the 154 kind/colour pairs, every kind and every colour in at least
one) never appear in the prior's training data (text encoder and diffusion model); the evaluator CLIP does
see them (it measures, it is not measured). Generalisation = the prior's numbers on those pairs.

Variation seeds. A stream draws the variation seed of every object; the seeds of the streams are disjoint
(residue of the seed mod 3: prior 0, evaluator 1, test 2), so the evaluator and the test views never show
an object the prior was trained on. The prior's stream also shows, for a fraction ``canonical_fraction``
of its objects, the caption's canonical object (seed :func:`splatgen.world.grammar.caption_seed`, the one
``parse_prompt`` builds and the text-to-3D metrics compare against).

Throughput. Rendering happens in chunks of ``objects_per_chunk`` objects x ``views_per_object`` cameras
(``render_world`` casts one object for many cameras in one call). On a GPU machine the chunks come from
CPU worker processes (:class:`ViewStream` in a ``DataLoader``) into a :class:`ViewPool` held on the GPU, from
which training batches are drawn: rendering never stalls a training step, views are reused when the
workers fall behind (the reuse ratio is logged).
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from splatgen.cameras import DIRECTIONS, sample_orbit_cameras
from splatgen.world.captions import CaptionTable
from splatgen.world.grammar import caption_for, caption_seed, make_object
from splatgen.world.raycast import render_world

#: (kind, colour) pairs never shown to the prior (text encoder and diffusion model): every kind and every
#: colour appears at least once. "a red mug" and "a green chair" (the README's examples) stay in training.
HELD_OUT_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("mug", "blue"),
    ("chair", "orange"),
    ("house", "pink"),
    ("snowman", "black"),
    ("car", "green"),
    ("car", "pink"),
    ("lamp", "red"),
    ("penguin", "purple"),
    ("teapot", "yellow"),
    ("robot", "white"),
    ("table", "brown"),
    ("tree", "grey"),
    ("donut", "purple"),
    ("rocket", "orange"),
    ("mushroom", "blue"),
)

#: the seeds of the streams are ``3 * k + STREAMS[name]``: no object is shared between streams.
STREAMS: Dict[str, int] = {"prior": 0, "evaluator": 1, "test": 2}

#: default camera ranges (those of ``CameraConfig``, i.e. of ``configs/default.yaml``).
ELEVATION_RANGE = (-10.0, 45.0)
RADIUS_RANGE = (2.0, 2.5)
FOVY_RANGE = (40.0, 50.0)
#: elevations of the "overhead" views (the sampler's default range never reaches 60 deg).
OVERHEAD_RANGE = (62.0, 85.0)

PLAIN = len(DIRECTIONS)  # direction id of a caption without ", <direction> view"


def held_out_pair_ids(table: CaptionTable, held_out: Sequence[Tuple[str, str]] = HELD_OUT_PAIRS) -> List[int]:
    return sorted(table.pair_id(k, c) for k, c in held_out)


@dataclass
class Views:
    """A chunk of rendered views.

    Attributes:
        images: [N, 3, H, W] uint8 (0..255; white background = 255).
        pair_ids: [N] long, kind x colour (:class:`CaptionTable`).
        dir_ids: [N] long, index in ``DIRECTIONS``.
        cams: [N, 3] float32, each view's camera: elevation and azimuth (degrees) and distance (the multi-view
            prior's conditioning); None where not kept.
    """

    images: Tensor
    pair_ids: Tensor
    dir_ids: Tensor
    cams: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Views":
        moved = [t.to(device, non_blocking=non_blocking) for t in (self.images, self.pair_ids, self.dir_ids)]
        return Views(*moved, None if self.cams is None else self.cams.to(device, non_blocking=non_blocking))

    def float_images(self) -> Tensor:
        """Images as float in [-1, 1]."""
        return self.images.float() / 127.5 - 1.0


def to_unit_range(images_uint8: Tensor) -> Tensor:
    return images_uint8.float() / 127.5 - 1.0


class WorldViews:
    """A reproducible stream of captioned views of the world, rendered on ``device``.

    Args:
        device: where the ray caster runs (``"cpu"`` in worker processes, or ``"cuda"``).
        resolution: side of the square views.
        held_out: pairs never drawn (unless ``include_held_out``).
        seed: seed of the stream (pairs, variation seeds, cameras).
        stream: ``"prior"``, ``"evaluator"`` or ``"test"`` (disjoint variation seeds, see the module doc).
        objects_per_chunk, views_per_object: a chunk renders this many objects from this many cameras each.
        supersample: ``s x s`` rays per pixel.
        overhead_fraction: fraction of objects seen from overhead cameras (elevation 62-85 deg) so that the
            caption ", overhead view" is known too (the default camera range never produces it).
        canonical_fraction: fraction of objects that are their caption's canonical object (prior stream only).
        include_held_out: draw the held-out pairs too (the evaluator's stream).
        group_size: V > 1 renders each object's views in groups of V that share elevation, distance and field of
            view, azimuths 360/V apart (:func:`splatgen.cameras.sample_orbit_cameras`): the multi-view prior's
            training samples. ``views_per_object`` must be a multiple of it.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        resolution: int = 64,
        held_out: Sequence[Tuple[str, str]] = HELD_OUT_PAIRS,
        seed: int = 0,
        stream: str = "prior",
        objects_per_chunk: int = 8,
        views_per_object: int = 16,
        supersample: int = 2,
        overhead_fraction: float = 0.05,
        canonical_fraction: float = 0.2,
        include_held_out: bool = False,
        elevation_range: Sequence[float] = ELEVATION_RANGE,
        radius_range: Sequence[float] = RADIUS_RANGE,
        fovy_range: Sequence[float] = FOVY_RANGE,
        group_size: int = 1,
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"stream={stream!r}; expected one of {list(STREAMS)}")
        if int(views_per_object) % int(group_size):
            raise ValueError(f"views_per_object={views_per_object} is not a multiple of group_size={group_size}")
        self.group_size = int(group_size)
        self.device = torch.device(device)
        self.resolution = int(resolution)
        self.table = CaptionTable()
        held = set(held_out_pair_ids(self.table, held_out))
        self.held_out_ids = sorted(held)
        self.pair_ids = [p for p in range(self.table.num_pairs) if include_held_out or p not in held]
        self.stream = stream
        self.objects_per_chunk = int(objects_per_chunk)
        self.views_per_object = int(views_per_object)
        self.supersample = int(supersample)
        self.overhead_fraction = float(overhead_fraction)
        self.canonical_fraction = float(canonical_fraction) if stream == "prior" else 0.0
        self.elevation_range = tuple(elevation_range)
        self.radius_range = tuple(radius_range)
        self.fovy_range = tuple(fovy_range)
        self.generator = torch.Generator().manual_seed(int(seed))

    # ---- state (checkpoints) ----
    def state_dict(self) -> Dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    # ---- drawing ----
    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.generator))

    def draw_object(self) -> Tuple[int, int]:
        """(pair id, variation seed) of the next object."""
        pair = self.pair_ids[self._randint(len(self.pair_ids))]
        kind, colour = self.table.pair(pair)
        if self.canonical_fraction > 0 and self._rand() < self.canonical_fraction:
            return pair, caption_seed(caption_for(kind, colour))
        return pair, 3 * self._randint(1 << 30) + STREAMS[self.stream]

    def render_chunk(self) -> Views:
        """The next chunk: ``objects_per_chunk * views_per_object`` views (uint8 images on ``device``)."""
        images, pairs, dirs, angles = [], [], [], []
        for _ in range(self.objects_per_chunk):
            pair, seed = self.draw_object()
            kind, colour = self.table.pair(pair)
            overhead = self.overhead_fraction > 0 and self._rand() < self.overhead_fraction
            cams = sample_orbit_cameras(
                self.views_per_object,
                self.resolution,
                self.generator,
                elevation_range=OVERHEAD_RANGE if overhead else self.elevation_range,
                radius_range=self.radius_range,
                fovy_range=self.fovy_range,
                device=self.device,
                group_size=self.group_size,
            )
            rgb = render_world(make_object(kind, colour, seed), cams, supersample=self.supersample)["rgb"]
            images.append((rgb.permute(0, 3, 1, 2) * 255.0).round().to(torch.uint8))
            pairs.append(torch.full((len(cams),), pair, dtype=torch.long))
            dirs.append(torch.tensor([DIRECTIONS.index(d) for d in cams.directions], dtype=torch.long))
            angles.append(torch.stack([cams.elevation, cams.azimuth, cams.radius], dim=-1).float().cpu())
        return Views(torch.cat(images), torch.cat(pairs).to(self.device), torch.cat(dirs).to(self.device),
                     torch.cat(angles).to(self.device))

    def next_batch(self) -> Tuple[Tensor, List[str]]:
        """One chunk as (images [B, 3, H, W] float in [-1, 1] on white, captions with their view direction)."""
        v = self.render_chunk()
        ids = self.table.caption_ids(v.pair_ids.cpu(), v.dir_ids.cpu())
        return v.float_images(), [self.table.texts[i] for i in ids.tolist()]


# ----------------------------------------------------------------------------------------------------------
# Worker processes and the pool on the training device
# ----------------------------------------------------------------------------------------------------------


class ViewStream(torch.utils.data.IterableDataset):
    """An endless stream of CPU-rendered chunks for a ``DataLoader``: worker ``i`` renders its own
    :class:`WorldViews` seeded from ``(seed, i)`` (one thread per worker)."""

    def __init__(self, seed: int, **kwargs) -> None:
        super().__init__()
        self.seed = int(seed)
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Views]:
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        torch.set_num_threads(1)
        views = WorldViews(device="cpu", seed=self.seed * 1009 + 7919 * (wid + 1), **self.kwargs)
        while True:
            yield views.render_chunk()


def _collate(chunk: Views) -> Views:
    return chunk


def _in_flight_limits(views: WorldViews, workers: int) -> Tuple[int, int]:
    """(DataLoader prefetch factor, queue length in chunks) keeping the chunks in flight, which live in
    shared memory, under 40% of /dev/shm (a container's can be as small as 64 MB)."""
    chunk_bytes = views.objects_per_chunk * views.views_per_object * 3 * views.resolution**2 + 1024
    try:
        shm = shutil.disk_usage("/dev/shm").total
    except OSError:
        shm = 1 << 30
    allowed = max(2 * workers, int(0.4 * shm / chunk_bytes))
    prefetch = max(1, min(4, allowed // (2 * workers)))
    return prefetch, max(2, min(32, allowed - prefetch * workers))


class ViewProducer:
    """Chunks of views, either rendered in this process on demand (``workers=0``, deterministic) or by
    ``workers`` CPU processes in the background (a ``DataLoader`` drained by a thread into a queue).

    :meth:`poll` never blocks with workers: it returns the chunks that are ready (at most ``max_chunks``).
    """

    def __init__(
        self, views: WorldViews, workers: int = 0, seed: int = 0, inline_chunks: int = 1, fallback_device: Optional[torch.device | str] = None
    ) -> None:
        self.views = views
        self.workers = int(workers)
        self.inline_chunks = int(inline_chunks)
        self.fallback_device = fallback_device
        self.rendered = 0
        self._error: Optional[BaseException] = None
        if self.workers > 0:
            prefetch, queue_chunks = _in_flight_limits(views, self.workers)
            kwargs = dict(
                resolution=views.resolution,
                stream=views.stream,
                objects_per_chunk=views.objects_per_chunk,
                views_per_object=views.views_per_object,
                supersample=views.supersample,
                overhead_fraction=views.overhead_fraction,
                canonical_fraction=views.canonical_fraction,
                include_held_out=len(views.pair_ids) == views.table.num_pairs,
                held_out=[views.table.pair(p) for p in views.held_out_ids],
                elevation_range=views.elevation_range,
                radius_range=views.radius_range,
                fovy_range=views.fovy_range,
                group_size=views.group_size,
            )
            self._loader = torch.utils.data.DataLoader(
                ViewStream(seed, **kwargs),
                batch_size=None,
                num_workers=self.workers,
                collate_fn=_collate,
                prefetch_factor=prefetch,
                persistent_workers=False,
            )
            self._queue: "queue.Queue[Views]" = queue.Queue(maxsize=queue_chunks)
            self._stop = threading.Event()
            # The worker processes are forked here, from the main thread; a thread then drains them.
            self._iter = iter(self._loader)
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        it = self._iter
        try:
            while not self._stop.is_set():
                chunk = next(it)
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # reported by poll() in the main thread
            self._error = exc
        finally:
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()

    def poll(self, max_chunks: int = 1, wait: bool = False) -> List[Views]:
        """Ready chunks (CPU tensors with workers, else on the stream's device); ``wait``: at least one.
        Without workers, ``inline_chunks`` chunks are rendered now (at most ``max_chunks``)."""
        if self.workers == 0:
            out = [self.views.render_chunk() for _ in range(min(max_chunks, self.inline_chunks))]
        else:
            out = []
            while len(out) < max_chunks:
                if self._error is not None:
                    if self.fallback_device is None:
                        raise RuntimeError(f"the view workers failed: {self._error!r}") from self._error
                    warnings.warn(
                        f"the view workers failed ({self._error!r}); rendering in this process on {self.fallback_device} from now on",
                        RuntimeWarning,
                    )
                    self.close()
                    self.workers = 0
                    self.views.device = torch.device(self.fallback_device)
                    self.rendered += sum(len(c) for c in out)
                    return out + self.poll(max_chunks - len(out))
                try:
                    out.append(self._queue.get(block=wait and not out, timeout=1.0 if wait and not out else None))
                except queue.Empty:
                    if wait and not out:
                        continue
                    break
        self.rendered += sum(len(c) for c in out)
        return out

    def close(self) -> None:
        """Stop the worker processes (the draining thread shuts them down when it sees the stop flag)."""
        if self.workers > 0:
            self._stop.set()
            self._thread.join(timeout=30)

    def state_dict(self) -> Dict[str, Tensor]:
        return self.views.state_dict() if self.workers == 0 else {}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        if self.workers == 0 and state:
            self.views.load_state_dict(state)


class ViewPool:
    """A ring buffer of views on the training device; batches are drawn from it uniformly.

    New chunks overwrite the oldest views. ``sample_distinct`` draws views whose (pair, direction) keys are all
    different (contrastive batches without false negatives).
    """

    def __init__(self, capacity: int, resolution: int, device: torch.device | str) -> None:
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.images = torch.empty(self.capacity, 3, resolution, resolution, dtype=torch.uint8, device=self.device)
        self.pair_ids = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        self.dir_ids = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        self.cams = torch.zeros(self.capacity, 3, dtype=torch.float32, device=self.device)
        self.size = 0
        self.head = 0
        self.added = 0
        self.drawn = 0

    def add(self, views: Views) -> None:
        n = len(views)
        if n > self.capacity:
            views = Views(views.images[-self.capacity :], views.pair_ids[-self.capacity :], views.dir_ids[-self.capacity :],
                          None if views.cams is None else views.cams[-self.capacity :])
            n = self.capacity
        idx = (self.head + torch.arange(n)) % self.capacity
        idx = idx.to(self.device)
        self.images[idx] = views.images.to(self.device, non_blocking=True)
        self.pair_ids[idx] = views.pair_ids.to(self.device, non_blocking=True)
        self.dir_ids[idx] = views.dir_ids.to(self.device, non_blocking=True)
        if views.cams is not None:
            self.cams[idx] = views.cams.to(self.device, non_blocking=True)
        self.head = (self.head + n) % self.capacity
        self.size = min(self.capacity, self.size + n)
        self.added += n

    def sample(self, n: int, generator: torch.Generator) -> Views:
        assert self.size > 0, "the pool is empty"
        idx = torch.randint(self.size, (n,), generator=generator).to(self.device)
        self.drawn += n
        return Views(self.images[idx], self.pair_ids[idx], self.dir_ids[idx], self.cams[idx])

    def sample_groups(self, n: int, group_size: int, generator: torch.Generator) -> Views:
        """``n`` groups of ``group_size`` views of one object each (rows g*V .. g*V+V-1 of the result are group g):
        the pool holds whole groups in order when every chunk and the capacity are multiples of ``group_size``."""
        assert self.size >= group_size, "the pool holds no whole group"
        if self.capacity % group_size:
            raise ValueError(f"pool capacity {self.capacity} is not a multiple of group_size={group_size}")
        g = torch.randint(self.size // group_size, (n,), generator=generator)
        idx = (g[:, None] * group_size + torch.arange(group_size)).reshape(-1).to(self.device)
        self.drawn += idx.shape[0]
        return Views(self.images[idx], self.pair_ids[idx], self.dir_ids[idx], self.cams[idx])

    def sample_distinct(self, n: int, generator: torch.Generator, num_dirs: int = len(DIRECTIONS)) -> Views:
        """Up to ``n`` views with pairwise different (pair, direction): a random order, the first view of
        each key, then ``n`` of those keys at random."""
        assert self.size > 0, "the pool is empty"
        order = torch.randperm(self.size, generator=generator).to(self.device)
        keys = self.pair_ids[order] * num_dirs + self.dir_ids[order]
        # first occurrence of each key in `order`: sort keys stably, keep the entries where the key changes
        sorted_keys, pos = torch.sort(keys, stable=True)
        first = torch.ones_like(sorted_keys, dtype=torch.bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        cand = order[pos[first]]
        pick = torch.randperm(cand.shape[0], generator=generator)[:n].to(self.device)
        idx = cand[pick]
        self.drawn += idx.shape[0]
        return Views(self.images[idx], self.pair_ids[idx], self.dir_ids[idx], self.cams[idx])

    def state_dict(self) -> Dict[str, object]:
        return {
            "images": self.images[: self.size].cpu(),
            "pair_ids": self.pair_ids[: self.size].cpu(),
            "dir_ids": self.dir_ids[: self.size].cpu(),
            "cams": self.cams[: self.size].cpu(),
            "head": self.head,
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        n = state["images"].shape[0]
        self.images[:n] = state["images"].to(self.device)
        self.pair_ids[:n] = state["pair_ids"].to(self.device)
        self.dir_ids[:n] = state["dir_ids"].to(self.device)
        if "cams" in state:
            self.cams[:n] = state["cams"].to(self.device)
        self.size, self.head = n, int(state["head"])

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    @property
    def reuse(self) -> float:
        """Views drawn per view rendered so far."""
        return self.drawn / max(1, self.added)


def fill_pool(pool: ViewPool, producer: ViewProducer, min_size: int, timeout_s: float = 600.0) -> None:
    """Block until the pool holds ``min_size`` views (at the start of a phase)."""
    t0 = time.time()
    while pool.size < min(min_size, pool.capacity):
        for chunk in producer.poll(max_chunks=16, wait=True):
            pool.add(chunk)
        if time.time() - t0 > timeout_s:
            raise RuntimeError(f"the view producer gave {pool.size} views in {timeout_s:.0f} s")


def views_per_second(device: str = "cpu", seconds: float = 5.0, **kwargs) -> float:
    """Measured rendering rate of one :class:`WorldViews` on ``device`` (this process, its threads)."""
    wv = WorldViews(device=device, **kwargs)
    wv.render_chunk()  # warm-up
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(wv.render_chunk())
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)
