import pandas as pd
import pytest
import torch

from idx.errors import IdxError
from models.average import average_checkpoints, average_state_dicts, recompute_batch_norm
from models.infer import load_weights
from models.network import BPartIS
from models.train import train
from tests.test_train import fake_emps


def test_average_is_the_mean_of_float_tensors_and_keeps_counters():
    torch.manual_seed(0)
    a, b = BPartIS().state_dict(), BPartIS().state_dict()
    b = {k: v + 2 if v.is_floating_point() else v + 5 for k, v in b.items()}
    mean = average_state_dicts([a, b])
    key = next(k for k in a if k.endswith("weight") and a[k].dim() == 4)
    torch.testing.assert_close(mean[key], (a[key] + b[key]) / 2)
    counter = next(k for k in a if k.endswith("num_batches_tracked"))
    assert mean[counter].dtype == torch.int64 and mean[counter] == b[counter]


def test_average_refuses_other_networks_and_nothing():
    state = BPartIS().state_dict()
    other = dict(state)
    other.pop(next(iter(other)))
    with pytest.raises(IdxError, match="keys or shapes"):
        average_state_dicts([state, other])
    with pytest.raises(IdxError, match="no weights"):
        average_state_dicts([])


def test_batch_norm_statistics_are_measured_on_the_fit_images(tmp_path):
    root = fake_emps(tmp_path / "emps")
    model = BPartIS()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(100.0)
    seen = []
    hook = bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    recompute_batch_norm(model, root, crop=64, batch_size=2)
    hook.remove()
    assert len(seen) >= 2  # several batches, averaged with equal weight
    expected = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert bn.running_var.max() < 50  # the planted statistics are gone


def test_constant_schedule_snapshots_every_epoch_and_averages(tmp_path):
    root = fake_emps(tmp_path / "emps")
    out = tmp_path / "run"
    train(root, out, epochs=2, batch_size=2, crop=64, eval_every=0, lr=1e-4, schedule="constant",
          snapshot_every=1)
    log = pd.read_csv(out / "log.csv")
    assert log["lr"].tolist() == [1e-4, 1e-4]
    snapshots = sorted((out / "snapshots").glob("epoch*.pt"))
    assert [p.name for p in snapshots] == ["epoch0001.pt", "epoch0002.pt"]
    averaged = average_checkpoints(snapshots, root, tmp_path / "swa.pt", crop=64)
    state, first, second = (load_weights(p) for p in (averaged, *snapshots))
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    torch.testing.assert_close(state[key], (first[key] + second[key]) / 2)
    with pytest.raises(IdxError, match="unknown learning-rate schedule .cosine."):
        train(root, tmp_path / "bad", epochs=1, batch_size=2, crop=64, eval_every=0, schedule="cosine")
