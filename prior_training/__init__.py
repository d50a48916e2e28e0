"""Training of splatgen's bundled prior (not part of the installed package; run from the repository root).

The shipped prior (``splatgen/assets/prior``) is an ordinary pixel-space diffusers model plus two open_clip
CLIP folders; splatgen loads it with its inference code (``splatgen.guidance``, ``splatgen.prior``). This
package rebuilds it:

- :mod:`.data` — captioned views of the world (rendered on the fly), held-out pairs, the view pool;
- :mod:`.clip` — the CLIP configuration, the world's tokenizer vocabulary, writing CLIP folders;
- :mod:`.unet` — the UNet configuration, noise schedule, loss, EMA and DDIM sampler;
- :mod:`.train` — ``python -m prior_training.train {clip,evaluator,unet,all,export,import}``;
- :mod:`.evaluate` — 2D samples scored by the evaluator CLIP, grids;
- :mod:`.card` — the model card.
"""
