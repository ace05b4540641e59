"""Training defaults shared by ``idx train`` and ``python -m models.train`` (no torch import).

One place for each default, so the two command lines and :func:`models.train.train` agree.
"""
LEARNING_RATE = 3e-4  # Adam, as published
SNAPSHOT_EVERY = 5
SCHEDULES = ("poly", "constant")  # learning rate: poly decay (power 0.9) over the run, or constant
# "published": flips, 90-degree turns, half-size crops scaled up, colour jitter (the paper's set);
# "em": also 2 x 2 mosaics of half-size images, gamma, blur and noise (models.data)
AUGMENTATIONS = ("published", "em")
OUT = "runs/bpartis"
EPOCHS = 200
BATCH_SIZE = 8
CROP = 256  # training crop side, px of the training image (IMAGE_SIZE)
# side the training images are resized to before cropping: 512, the working size of inference (a
# crop keeps what one pixel means), or 256 as published (whole micrographs at half that scale)
IMAGE_SIZE = 512
EVAL_EVERY = 5  # validation AP every N epochs (0: never)
DEVICE = "cpu"
WORKERS = 0
VAL_LOSS_EVERY = 4  # epochs between validation-loss passes (and at the last)
