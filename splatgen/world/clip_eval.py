"""Scoring images against the world's captions with the evaluator CLIP (shipped with the bundled prior,
``evaluator_clip/``, trained apart from the prior on its own views): CLIP R-precision.

CLIP R-precision (here with R = 1, i.e. top-1 retrieval). An image i comes with its true caption c_i and a
set of candidate captions S_i that contains c_i. With unit-norm CLIP features, the image counts as
*correct* when ``argmax_{c in S_i} <f_image(i), f_text(c)> == c_i``; R-precision is the fraction of
correct images. For the world, S_i is **every kind x colour caption of the world with the same view
direction as c_i** ("<a|an> <colour> <kind>, <direction> view" for all 14 kinds and 11 colours: 154
candidates), so a correct image has the right kind *and* the right colour. The kind and colour accuracies
of the top caption are reported too, and the direction accuracy (the true caption's direction ranked
first among the front/side/back captions of the true pair).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import DIRECTIONS
from ..guidance.text_encoders import EVALUATOR_FOLDER, load_clip_folder
from ..resources import bundled_prior_path
from .captions import CaptionTable
from .clip_eval_cache import cached_caption_features
from .grammar import is_world_prompt, parse_prompt


def r_precision(image_features: Tensor, text_features: Tensor, true_index: Tensor, candidates: Optional[Tensor] = None) -> Tensor:
    """[N] bool: whether each image's true caption scores highest among its candidates.

    Args:
        image_features: [N, E]; text_features: [M, E] (normalised here).
        true_index: [N] indices into the M captions.
        candidates: [N, M] bool (True: caption m is a candidate for image n; must include the true one), or
            [N, K] long indices of the candidate captions; None: all M captions.
    """
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    scores = img @ txt.T  # [N, M]
    if candidates is not None:
        if candidates.dtype == torch.bool:
            mask = candidates
        else:
            mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates.long(), True)
        assert bool(mask.gather(1, true_index.long()[:, None]).all()), "every true caption must be a candidate"
        scores = scores.masked_fill(~mask, -math.inf)
    return scores.argmax(dim=1) == true_index.long()


class Evaluator:
    """The evaluator CLIP (``evaluator_clip/`` of a prior) as a scorer of images against the world's captions."""

    def __init__(self, folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.tokenizer, self.meta = load_clip_folder(folder, self.device)
        self.table = CaptionTable()
        self.image_size = int(self.model.visual.image_size[0]) if isinstance(self.model.visual.image_size, (tuple, list)) else int(self.model.visual.image_size)
        # The same for every process with these files: kept on disk (see clip_eval_cache), not recomputed.
        self.text_features = cached_caption_features(Path(folder), self.table.texts, self.device, self._caption_features)

    @torch.no_grad()
    def _caption_features(self) -> Tensor:
        return self.model.encode_text(self.tokenizer(self.table.texts).to(self.device), normalize=True).float()

    @torch.no_grad()
    def image_features(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """[N, E] unit features of images [N, 3, H, W] in [-1, 1] (resized to the CLIP's input size)."""
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(self.device, torch.float32)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
            out.append(self.model.encode_image(x, normalize=True).float())
        return torch.cat(out)

    def score(self, images: Tensor, pair_ids: Tensor, dir_ids: Tensor) -> Dict[str, Tensor]:
        """Per image (all [N]): ``correct`` (R-precision hit), ``kind_correct``, ``colour_correct``,
        ``direction_correct`` (among front/side/back of the true pair) and ``predicted_pair``."""
        t = self.table
        feats = self.image_features(images)
        pair_ids, dir_ids = pair_ids.cpu().long(), dir_ids.cpu().long()
        all_pairs = torch.arange(t.num_pairs)
        cand = t.caption_ids(all_pairs[None, :].expand(len(pair_ids), -1), dir_ids[:, None].expand(-1, t.num_pairs))  # [N, P]
        true = t.caption_ids(pair_ids, dir_ids)
        tf = self.text_features.cpu()
        scores = feats.cpu() @ tf.T
        cand_scores = scores.gather(1, cand)
        pred_pair = cand_scores.argmax(1)
        C = len(t.colours)
        correct = r_precision(feats.cpu(), tf, true, cand)
        three = torch.tensor([DIRECTIONS.index(d) for d in ("front", "side", "back")])
        dir_cand = t.caption_ids(pair_ids[:, None].expand(-1, 3), three[None, :].expand(len(pair_ids), -1))
        dir_pred = three[scores.gather(1, dir_cand).argmax(1)]
        return {
            "correct": correct,
            "kind_correct": pred_pair // C == pair_ids // C,
            "colour_correct": pred_pair % C == pair_ids % C,
            "direction_correct": dir_pred == dir_ids,
            "predicted_pair": pred_pair,
        }


def run_r_precision(evaluator: Evaluator, images: Tensor, prompt: str, directions: Sequence[str]) -> Optional[float]:
    """R-precision of a run's renders [V, 3, H, W] in [0, 1] for a world prompt, one view direction per
    render (``splatgen evaluate``); None when the prompt is not a kind/colour caption of the world."""
    if not is_world_prompt(prompt):
        return None
    obj = parse_prompt(prompt)
    t = evaluator.table
    pair = torch.full((len(directions),), t.pair_id(obj.kind, obj.colour))
    dirs = torch.tensor([DIRECTIONS.index(d) for d in directions])
    return float(evaluator.score(images * 2.0 - 1.0, pair, dirs)["correct"].float().mean())


@functools.lru_cache(maxsize=4)
def bundled_evaluator(device: str = "cpu") -> Optional[Evaluator]:
    """The evaluator shipped with the bundled prior (``splatgen/assets/prior/evaluator_clip``), loaded once per
    device; None when this installation does not have it."""
    folder = bundled_prior_path() / EVALUATOR_FOLDER
    return Evaluator(folder, torch.device(device)) if folder.is_dir() else None
