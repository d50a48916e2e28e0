# CPU pilot driver (not part of the repo): the mvunet phase with a 50-step warm-up and the pool refilled every
# 8th step (rendering on 2 cores would otherwise take most of each step; the pool holds 1024 groups).
import dataclasses, sys
import prior_training.train as T
from prior_training.multiview import train_mvunet
T.FULL = dataclasses.replace(T.FULL, unet_warmup=50)
orig = T._Session.fill_pool
count = {"n": 0}
def fill(self):
    count["n"] += 1
    if count["n"] % 8 == 1:
        orig(self)
T._Session.fill_pool = fill
opts = T.TrainOptions(out=sys.argv[1], minutes=float(sys.argv[2]), batch=32, lr=3e-4, workers=0, log_every=10, checkpoint_minutes=10)
print(train_mvunet(opts, 4))
