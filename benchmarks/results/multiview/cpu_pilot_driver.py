# CPU pilot driver: the mvunet phase with a 50-step warm-up and the pool refilled every 8th step (rendering on 2
# cores would otherwise take most of each step; the pool holds 1024 groups).
#   python cpu_pilot_driver.py RUN MINUTES [--gated] [--view-words] [--resume] [--lr 3e-4]
# (RUN from `python -m prior_training.train import --out RUN --from splatgen/assets/prior`; run it with the
# repository on PYTHONPATH.)
import argparse
import dataclasses

import prior_training.train as T
from prior_training.multiview import train_mvunet

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("minutes", type=float)
ap.add_argument("--gated", action="store_true")
ap.add_argument("--view-words", action="store_true")
ap.add_argument("--resume", action="store_true")
ap.add_argument("--lr", type=float, default=3e-4)
args = ap.parse_args()
T.FULL = dataclasses.replace(T.FULL, unet_warmup=50)
orig = T._Session.fill_pool
count = {"n": 0}


def fill(self):
    count["n"] += 1
    if count["n"] % 8 == 1:
        orig(self)


T._Session.fill_pool = fill
opts = T.TrainOptions(out=args.run, minutes=args.minutes, batch=32, lr=args.lr, workers=0, log_every=10,
                      checkpoint_minutes=10, resume=args.resume)
print(train_mvunet(opts, 4, gated=args.gated, view_words=args.view_words))
