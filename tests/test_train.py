import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import models.data as data
from idx.errors import IdxError
from models.data import augment, colour_jitter, em_degrade, load_sample, mosaic, read_split, relabel
from models.loss import SpatialEmbeddingLoss
from models.network import BPartIS
from models.train import run_batches, train, train_one_epoch


def fake_emps(root, n=8, size=96):
    """A miniature EMPS folder: dark disks on a light background, 16-bit instance maps."""
    (root / "images").mkdir(parents=True)
    (root / "segmaps").mkdir()
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:size, :size]
    stems = []
    for i in range(n):
        image = np.full((size, size), 190.0)
        labels = np.zeros((size, size), np.uint16)
        for k in range(1, 6):
            r, c = rng.integers(12, size - 12, 2)
            disk = (rr - r) ** 2 + (cc - c) ** 2 < rng.integers(5, 10) ** 2
            image[disk], labels[disk] = 60, k
        stem = f"img{i:02d}"
        Image.fromarray(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)).convert(
            "RGB").save(root / "images" / f"{stem}.png")
        Image.fromarray(labels).save(root / "segmaps" / f"{stem}.png")
        stems.append(stem)
    (root / "train.csv").write_text("\n".join(stems[:6]) + "\n")
    (root / "test.csv").write_text("\n".join(stems[6:]) + "\n")
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "doi", "locator", "regions"])
        for i, stem in enumerate(stems):
            writer.writerow([f"{stem}.png", f"10.1/doi{i // 2}", "gr1", "[]"])
    return root


def test_validation_split_is_grouped_by_doi(emps_dir):
    fit, val = read_split(emps_dir, "fit"), read_split(emps_dir, "val")
    assert sorted(fit + val) == sorted(read_split(emps_dir, "train"))
    doi = pd.read_csv(emps_dir / "metadata.csv").set_index(
        pd.read_csv(emps_dir / "metadata.csv")["filename"].str.replace(".png", "", regex=False))["doi"]
    assert not set(doi[fit]) & set(doi[val])
    assert 0.1 < len(val) / (len(fit) + len(val)) < 0.25
    assert not set(val) & set(read_split(emps_dir, "test"))


def test_augment_keeps_image_and_instances_aligned():
    image = np.zeros((64, 64, 3), np.uint8)
    labels = np.zeros((64, 64), np.int32)
    image[10:20, 30:50] = 255
    labels[10:20, 30:50] = 7
    rng = np.random.default_rng(3)
    for _ in range(10):
        crop_image, crop_labels = augment(type("S", (), {"image": image, "instances": labels})(), 32, rng)
        assert crop_image.shape == (32, 32, 3) and crop_labels.shape == (32, 32)
        assert set(np.unique(crop_labels)) <= {0, 1}
        assert np.array_equal(crop_image[..., 0] > 127, crop_labels > 0)


def test_colour_jitter_stays_in_range_and_changes_values():
    x = torch.rand(4, 3, 16, 16)
    y = colour_jitter(x, 0.3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)


def test_mosaic_shrinks_four_images_into_quadrants_with_their_own_instances():
    pairs = []
    for k in range(4):  # image k: a bright square (instance 1) and a dim bar (instance 2)
        image = np.zeros((64, 64, 3), np.uint8)
        labels = np.zeros((64, 64), np.int32)
        image[8 + k:24 + k, 8:24], labels[8 + k:24 + k, 8:24] = 250, 1
        image[40:44, 10:60], labels[40:44, 10:60] = 120, 2
        pairs.append((image, labels))
    image, labels = mosaic(pairs)
    assert image.shape == (64, 64, 3) and labels.shape == (64, 64)
    assert labels.max() == 8 and set(np.unique(labels)) == set(range(9))  # 2 per quadrant, renumbered
    for k, (r, c) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        quadrant = labels[r:r + 32, c:c + 32]
        ids = set(np.unique(quadrant)) - {0}
        assert len(ids) == 2  # no instance crosses into another quadrant
        square = min(ids, key=lambda i: abs((quadrant == i).sum() - 64))
        assert (quadrant == square).sum() == 64  # 16 x 16 -> 8 x 8
        rows = np.nonzero((quadrant == square).any(1))[0]
        assert rows[0] == (8 + k) // 2  # placed where the square was, at half scale
        bright = image[r:r + 32, c:c + 32, 0][quadrant == square]
        assert np.median(bright) == 250 and bright.min() >= 125  # image follows labels (a rim row
        # of an odd-placed square averages two source rows)


def test_em_degradation_is_seeded_blurs_and_adds_noise(monkeypatch):
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :, 16:] = 1.0  # a vertical step edge
    x = x * 0.8 + 0.1
    for name in ("GAMMA_P", "BLUR_P", "NOISE_P"):
        monkeypatch.setattr(data, name, 0.0)
    assert torch.equal(em_degrade(x, torch.Generator().manual_seed(0)), x)  # nothing drawn: unchanged
    monkeypatch.setattr(data, "BLUR_P", 1.0)
    blurred = em_degrade(x, torch.Generator().manual_seed(0))
    assert 0.1 < blurred[0, 0, 5, 15] < 0.9 and blurred[0, 0, 5, 0] == pytest.approx(0.1)  # the edge spreads
    assert torch.allclose(blurred[..., 0, :], blurred[..., 31, :])  # reflect padding: rows stay equal
    monkeypatch.setattr(data, "BLUR_P", 0.0)
    monkeypatch.setattr(data, "NOISE_P", 1.0)
    noisy = em_degrade(x, torch.Generator().manual_seed(1))
    assert torch.equal(noisy, em_degrade(x, torch.Generator().manual_seed(1)))
    assert 0.005 < (noisy - x)[0, 0].std() < 0.07 and torch.equal(noisy[:, 0], noisy[:, 2])  # grey noise
    assert noisy.min() >= 0 and noisy.max() <= 1
    monkeypatch.setattr(data, "NOISE_P", 0.0)
    monkeypatch.setattr(data, "GAMMA_P", 1.0)
    curved = em_degrade(x, torch.Generator().manual_seed(2))
    assert torch.equal(curved[x == 0.1] > 0, torch.ones_like(curved[x == 0.1], dtype=torch.bool))
    assert not torch.allclose(curved, x) and torch.all(curved[x == 0.9] <= 1)


def test_em_augmentation_batches_keep_images_and_instances_aligned(tmp_path):
    root = fake_emps(tmp_path / "emps")
    samples = [load_sample(root, s, 64) for s in read_split(root, "train")]
    for epoch in range(4):
        images, instances = next(iter(run_batches(samples, 4, 64, epochs=[epoch], augmentation="em")))
        grey, inside = images.mean(1), instances > 0
        for b in range(len(grey)):  # the disks are dark (60 on 190): gamma, jitter and noise keep them darker
            if inside[b].any() and (~inside[b]).any():
                dark, light = grey[b][inside[b]].mean(), grey[b][~inside[b]].mean()
                assert light - dark > 0.1, (dark, light)
                agree = ((grey[b] < (dark + light) / 2) == inside[b]).float().mean()
                assert agree > 0.9, agree  # shifted or turned labels would agree far less
    with pytest.raises(IdxError, match="unknown augmentation 'mixup'"):
        run_batches(samples, 4, 64, augmentation="mixup")
    with pytest.raises(IdxError, match="unknown augmentation 'mixup'"):
        train(root, tmp_path / "run", epochs=1, augmentation="mixup")
    assert not (tmp_path / "run").exists()  # refused before any folder or loading
    for options, message in (({"batch_size": 0}, "--batch-size 0: must be at least 1"),
                             ({"crop": 60}, "--crop 60: must be a multiple of 8"),
                             ({"epochs": 0}, "--epochs 0: must be at least 1"),
                             ({"lr": -1e-4}, "--lr -0.0001: must be a finite number above 0"),
                             ({"lr": math.inf}, "--lr inf: must be a finite number above 0"),
                             ({"threads": -1}, "--threads -1: must be at least 1"),
                             ({"snapshot_every": -1}, "--snapshot-every -1: must be 0"),
                             ({"batch_size": 9}, "--batch-size 9: more than the 4 training images")):
        with pytest.raises(IdxError, match=message):
            train(root, tmp_path / "run", **{"epochs": 1, **options})
    assert not (tmp_path / "run").exists()
    if not torch.cuda.is_available():
        with pytest.raises(IdxError, match="sees no CUDA GPU; use --device cpu"):
            train(root, tmp_path / "run", epochs=1, device="cuda")
        assert not (tmp_path / "run").exists()


def test_worker_processes_make_the_same_batches_as_one_process(tmp_path):
    # a GPU run makes its batches in DataLoader workers; each batch is seeded by (seed, epoch, batch),
    # so the run trains on exactly what the single-process CPU run would, and a resumed run on what
    # an unbroken one would
    root = fake_emps(tmp_path / "emps")
    samples = [load_sample(root, s, 64) for s in read_split(root, "train")]
    per_epoch = len(samples) // 2
    for augmentation in ("published", "em"):
        alone = list(run_batches(samples, 2, 64, seed=3, epochs=[5, 6], augmentation=augmentation))
        workers = list(run_batches(samples, 2, 64, seed=3, epochs=[5, 6], augmentation=augmentation,
                                   workers=2))
        resumed = list(run_batches(samples, 2, 64, seed=3, epochs=[6], augmentation=augmentation))
        assert len(alone) == len(workers) == 2 * per_epoch and len(resumed) == per_epoch
        for (a_img, a_inst), (w_img, w_inst) in zip(alone, workers):
            assert torch.equal(a_img, w_img) and torch.equal(a_inst, w_inst)
        for (a_img, a_inst), (r_img, r_inst) in zip(alone[per_epoch:], resumed):
            assert torch.equal(a_img, r_img) and torch.equal(a_inst, r_inst)
        # a new epoch, new crops
        assert not all(torch.equal(a[0], b[0]) for a, b in zip(alone[:per_epoch], alone[per_epoch:]))


def test_em_mosaics_take_four_different_images(tmp_path, monkeypatch):
    import models.train as train_module

    root = fake_emps(tmp_path / "emps")
    samples = [load_sample(root, s, 64) for s in read_split(root, "train")]
    index = {id(sample): k for k, sample in enumerate(samples)}
    groups = []
    monkeypatch.setattr(train_module, "MOSAIC_P", 1.0)
    monkeypatch.setattr(train_module, "augment", lambda sample, crop, rng: (
        np.full((crop, crop, 3), index[id(sample)], np.uint8), np.zeros((crop, crop), np.int32)))
    monkeypatch.setattr(train_module, "mosaic", lambda pairs: groups.append([int(p[0][0, 0, 0]) for p in pairs])
                        or pairs[0])
    list(run_batches(samples, 2, 16, epochs=range(1, 9), augmentation="em"))
    assert len(groups) == 8 * len(samples)
    assert all(len(set(group)) == 4 for group in groups)  # an image never fills two of its own quadrants


def test_a_diverged_epoch_saves_nothing_and_leaves_the_last_good_checkpoint(tmp_path, caplog,
                                                                            monkeypatch):
    import models.train as train_module

    root = fake_emps(tmp_path / "emps")
    out, threads = tmp_path / "run", torch.get_num_threads()
    train(root, out, epochs=1, batch_size=2, crop=32, eval_every=0, threads=1, snapshot_every=1)
    good = torch.load(out / "last.pt", weights_only=False)
    monkeypatch.setattr(train_module, "train_one_epoch", lambda *a, **k: (math.nan,) * 4)
    with pytest.raises(IdxError, match="diverged at epoch 2 .*still holds epoch 1: resume with a lower --lr"):
        train(root, out, epochs=2, batch_size=2, crop=32, eval_every=0, threads=1, snapshot_every=1)
    kept = torch.load(out / "last.pt", weights_only=False)
    assert kept["epoch"] == 1 and not (out / "snapshots" / "epoch0002.pt").exists()
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="models.train"):
        train(root, out, epochs=1, batch_size=2, crop=32, eval_every=0, threads=1)
    torch.set_num_threads(threads)
    assert "already at epoch 1 of 1: nothing to train" in caplog.text


def test_resuming_keeps_the_runs_augmentation_and_says_so(tmp_path, caplog):
    root = fake_emps(tmp_path / "emps")
    out, threads = tmp_path / "run", torch.get_num_threads()
    train(root, out, epochs=1, batch_size=2, crop=32, eval_every=0, augmentation="em", threads=1)
    with caplog.at_level("WARNING", logger="models.train"):
        train(root, out, epochs=2, batch_size=2, crop=32, eval_every=0, augmentation="published", threads=1)
    torch.set_num_threads(threads)  # the rest of the suite keeps its threads
    assert "trained with augmentation 'em': it goes on with it, not 'published'" in caplog.text
    assert torch.load(out / "last.pt", weights_only=False)["augmentation"] == "em"


def test_whole_images_at_the_published_scale_and_resumed_runs_keep_it(tmp_path, caplog, monkeypatch):
    root = fake_emps(tmp_path / "emps")
    out, threads = tmp_path / "run", torch.get_num_threads()
    with pytest.raises(IdxError, match="--image-size 32: must be at least --crop"):
        train(root, out, epochs=1, batch_size=2, crop=48, eval_every=0, image_size=32)
    loaded = []
    monkeypatch.setattr("models.train.load_sample",
                        lambda d, s, size: loaded.append(size) or load_sample(d, s, size))
    train(root, out, epochs=1, batch_size=2, crop=48, eval_every=0, image_size=48, threads=1)
    n_fit, n_val = len(read_split(root, "fit")), len(read_split(root, "val"))
    assert loaded == [48] * n_fit + [512] * n_val  # validation stays at the inference size
    loaded.clear()
    with caplog.at_level("WARNING", logger="models.train"):
        train(root, out, epochs=2, batch_size=2, crop=48, eval_every=0, threads=1)  # default 512
    torch.set_num_threads(threads)
    assert "trained on images resized to 48 px: it goes on with them, not 512" in caplog.text
    assert loaded[:n_fit] == [48] * n_fit
    assert torch.load(out / "last.pt", weights_only=False)["image_size"] == 48


def test_relabel_numbers_instances_consecutively():
    labels = np.array([[0, 5, 5], [9, 0, 2]])
    assert relabel(labels).tolist() == [[0, 2, 2], [3, 0, 1]]


def test_training_steps_fit_a_fixed_batch(tmp_path):
    root = fake_emps(tmp_path / "emps")
    samples = [load_sample(root, s, 64) for s in read_split(root, "train")]
    batch = next(iter(run_batches(samples, 4, 64)))
    torch.manual_seed(0)
    model = BPartIS().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    terms = np.array([train_one_epoch(model, [batch], optimizer, SpatialEmbeddingLoss(), "cpu")
                      for _ in range(12)])  # columns: total, instance, seed, smoothness
    assert terms[-3:, 2].mean() < 0.75 * terms[0, 2]  # seeds learn first
    assert terms[-3:, 0].mean() < terms[1:4, 0].mean()  # the total comes down after Adam's first jump


def test_frozen_batch_norm_keeps_its_statistics_while_the_rest_learns(tmp_path):
    root = fake_emps(tmp_path / "emps")
    samples = [load_sample(root, s, 64) for s in read_split(root, "train")]
    batch = next(iter(run_batches(samples, 4, 64)))
    runs = {}
    for freeze in (False, True):
        torch.manual_seed(0)
        model = BPartIS().to(memory_format=torch.channels_last)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_one_epoch(model, [batch], optimizer, SpatialEmbeddingLoss(), "cpu", freeze_bn=freeze)
        after = model.state_dict()
        runs[freeze] = {k: not torch.equal(before[k], after[k]) for k in before}
        assert model.training and any(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout2d))
    stats = [k for k in runs[True] if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 49  # every batch-norm layer of the network
    assert all(runs[False][k] for k in stats) and not any(runs[True][k] for k in stats)
    assert runs[True]["encoder.initial_block.bn.weight"]  # scale and shift still learn
    assert runs[True]["decoders.1.output_conv.weight"]


def test_resumed_runs_keep_their_batch_norm_setting(tmp_path, caplog):
    root = fake_emps(tmp_path / "emps")
    out, threads = tmp_path / "run", torch.get_num_threads()
    with pytest.raises(IdxError, match="--freeze-bn keeps the batch-norm statistics of a trained network"):
        train(root, out, epochs=1, batch_size=2, crop=32, eval_every=0, freeze_bn=True)  # nothing to keep
    torch.save(BPartIS().state_dict(), tmp_path / "warm.pt")
    train(root, out, epochs=1, batch_size=2, crop=32, eval_every=0, freeze_bn=True, threads=1,
          init=tmp_path / "warm.pt")
    with caplog.at_level("WARNING", logger="models.train"):
        train(root, out, epochs=2, batch_size=2, crop=32, eval_every=0, threads=1)
    torch.set_num_threads(threads)
    assert "trained with freeze_bn=True: it goes on with it" in caplog.text
    assert torch.load(out / "last.pt", weights_only=False)["freeze_bn"] is True


@pytest.mark.slow
def test_train_writes_checkpoints_and_resumes(tmp_path):
    root = fake_emps(tmp_path / "emps")
    out = tmp_path / "run"
    train(root, out, epochs=1, batch_size=2, crop=64, eval_every=1)
    assert {"last.pt", "log.csv", "loss.png", "best.pt"} <= {p.name for p in out.iterdir()}
    train(root, out, epochs=2, batch_size=2, crop=64, eval_every=1)
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 2
    assert torch.load(out / "last.pt", weights_only=False)["augmentation"] == "published"


def test_idx_train_runs_an_epoch_with_the_chosen_schedule_and_augmentation(tmp_path):
    from click.testing import CliRunner

    from idx.cli import cli

    root = fake_emps(tmp_path / "emps")
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    result = CliRunner().invoke(cli, ["train", "--data", str(root), "--out", str(out), "--epochs", "1",
                                      "--batch-size", "2", "--crop", "32", "--eval-every", "0", "--lr", "2e-4",
                                      "--schedule", "constant", "--augment", "em", "--snapshot-every", "1",
                                      "--threads", "1"])
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)  # the rest of the suite keeps its threads
    assert result.exit_code == 0, result.output
    state = torch.load(out / "last.pt", weights_only=False)
    assert (state["epoch"], state["lr"], state["schedule"], state["augmentation"], state["crop"]) == (
        1, 2e-4, "constant", "em", 32)
    assert pd.read_csv(out / "log.csv")["lr"].tolist() == [2e-4]
    assert (out / "snapshots" / "epoch0001.pt").exists()


def test_a_damaged_or_weights_only_last_pt_stops_the_resume_with_one_line(tmp_path):
    from click.testing import CliRunner

    from idx.cli import cli

    root = fake_emps(tmp_path / "emps")
    out = tmp_path / "run"
    out.mkdir()
    args = ["train", "--data", str(root), "--out", str(out), "--epochs", "2", "--batch-size", "2", "--crop", "32"]
    torch.save({"model": BPartIS().state_dict(), "optimizer": {}, "epoch": 1}, out / "last.pt")
    whole = (out / "last.pt").read_bytes()
    for content, problem in ((whole[: len(whole) // 2], "not a readable PyTorch checkpoint"),
                             (b"", "the file is empty"),
                             (None, "not a resumable training checkpoint")):
        if content is None:
            torch.save(BPartIS().state_dict(), out / "last.pt")  # the weights a user copied over it
        else:
            (out / "last.pt").write_bytes(content)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code != 0
        message = result.output.strip()
        assert "Traceback" not in message and len(message.splitlines()) == 1, message
        assert "last.pt" in message and problem in message and "start the run again" in message
        assert not (out / "log.csv").exists()  # nothing written before the error


def test_idx_train_and_python_m_models_train_share_their_defaults():
    import inspect

    from idx.cli import cli
    from models.train import build_parser

    parsed = vars(build_parser().parse_args([]))
    clicked = {p.name: p.default for p in cli.commands["train"].params}
    signature = inspect.signature(train).parameters
    for name, arg, param in [("out", "out", None), ("epochs", "epochs", None),
                             ("batch_size", "batch_size", "batch_size"), ("crop", "crop", "crop"),
                             ("lr", "lr", "lr"), ("device", "device", "device"),
                             ("eval_every", "eval_every", "eval_every"), ("schedule", "schedule", "schedule"),
                             ("snapshot_every", "snapshot_every", "snapshot_every"),
                             ("augment", "augment", "augmentation"), ("workers", "workers", "workers"),
                             ("freeze_bn", "freeze_bn", "freeze_bn"),
                             ("image_size", "image_size", "image_size")]:
        assert clicked[name] == parsed[arg], name
        if param:
            assert signature[param].default == parsed[arg], name
