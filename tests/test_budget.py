import subprocess
import sys

import numpy as np
import pandas as pd
import torch
from PIL import Image

from models.budget import pack_emps, plan_epochs, run_budget, snapshot_every, validation_passes
from models.data import load_sample, read_dois, read_split
from tests.test_train import fake_emps


def test_packed_emps_loads_the_same_arrays_and_split(tmp_path):
    root = fake_emps(tmp_path / "emps", size=100)
    packed = pack_emps(root, tmp_path / "packed", size=64)
    assert read_split(packed, "train") == read_split(root, "train")
    assert read_split(packed, "fit") == read_split(root, "fit")  # same DOIs, so the same validation split
    assert set(read_dois(packed)) == set(read_split(root, "train"))  # the test images stay behind
    for stem in read_split(root, "train"):
        original, copy = load_sample(root, stem, 64), load_sample(packed, stem, 64)
        assert np.array_equal(original.image, copy.image)
        assert np.array_equal(original.instances, copy.instances)
        assert Image.open(packed / "images" / f"{stem}.png").mode == "L"  # grey images keep one channel
    assert not (packed / "images" / "img06.png").exists()


def test_plan_epochs_fits_the_budget():
    assert plan_epochs(420, 2.5) == 168
    assert plan_epochs(10, 30) == 1  # always at least one epoch
    assert plan_epochs(10, 0) > 0
    # with validation passes of 1 s: 94 epochs of 3 s and their 27 passes (23 every 4 epochs, 3 more
    # at snapshots every 18, the last) take 309 s; 95 epochs take 312 s
    assert validation_passes(94, snapshot_every(94)) == 27
    assert plan_epochs(311, 3.0, per_pass=1.0) == 94
    assert plan_epochs(311, 3.0) == 103
    assert validation_passes(5, 1) == 5 and validation_passes(3, 3) == 1


def test_run_budget_probes_plans_trains_and_copies(tmp_path):
    root = fake_emps(tmp_path / "emps")
    threads = torch.get_num_threads()
    plan = run_budget(root, tmp_path / "out", seconds=2.0, device="cpu", workers=2,
                      train_args=["--crop", "32", "--batch-size", "2", "--threads", "1"])
    torch.set_num_threads(threads)
    assert plan["epochs"] == plan_epochs(2.0, plan["seconds_per_epoch"], plan["seconds_per_validation"])
    assert plan["seconds_per_validation"] >= 0
    log = pd.read_csv(tmp_path / "out" / "log.csv")
    assert log["epoch"].tolist() == list(range(1, plan["epochs"] + 1))  # a fresh run, not the probe's
    assert {"log.csv", "loss.png", *plan["snapshots"]} <= {p.name for p in (tmp_path / "out").iterdir()}
    assert plan["snapshots"][-1] == f"epoch{plan['epochs']:04d}.pt"  # the last epoch always comes back


def test_module_entry_points_end_a_user_error_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "models.budget", "run", "--data", str(tmp_path / "nothere"),
                             "--out", str(tmp_path / "out"), "--seconds", "1", "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nothere' / 'train.csv'}: split file missing; --data must be an EMPS folder with "
        "train.csv, test.csv, images/ and segmaps/"]
    assert not (tmp_path / "out").exists()
