import torch

from models.loss import SpatialEmbeddingLoss, image_loss, lovasz_hinge
from models.network import PIXEL_SCALE, SIGMA_SCALE, coordinate_map


def two_squares(size=32):
    inst = torch.zeros(size, size, dtype=torch.long)
    inst[4:12, 4:12] = 1
    inst[18:28, 16:26] = 2
    return inst


def ideal_maps(inst):
    """Embeddings pointing every instance pixel at its instance centre, seeds = 1 inside."""
    h, w = inst.shape
    emb = coordinate_map(h, w).clone()
    for k in inst.unique()[1:]:
        m = inst == k
        emb[:, m] = emb[:, m].mean(1, keepdim=True)
    # sigma giving 1/(2 s^2) = exp(10 * s_raw) wide enough for phi ~ 1 at the centre, narrow between
    s_raw = torch.full((2, h, w), float(torch.log(torch.tensor(1.0 / (2 * (1 * PIXEL_SCALE) ** 2)))) / SIGMA_SCALE)
    seed = (inst > 0).float().unsqueeze(0)
    return emb, s_raw, seed


def test_lovasz_hinge_zero_for_perfect_margin_and_positive_otherwise():
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert float(lovasz_hinge(torch.tensor([[1.0, 1.0, -1.0, -1.0]]), labels)) == 0.0
    assert float(lovasz_hinge(torch.tensor([[-1.0, 1.0, -1.0, 1.0]]), labels)) > 0.5


def test_ideal_prediction_has_near_zero_loss_and_bad_one_does_not():
    inst = two_squares()
    emb, sigma, seed = ideal_maps(inst)
    good = image_loss(emb, sigma, seed, inst)
    assert float(good[0]) < 0.05 and float(good[1]) < 0.01 and float(good[2]) < 1e-8
    bad = image_loss(coordinate_map(32, 32), sigma, torch.zeros(1, 32, 32), inst)
    assert float(bad[0]) > 0.5 and float(bad[1]) > float(good[1])


def test_background_only_image_only_penalises_seeds():
    inst = torch.zeros(16, 16, dtype=torch.long)
    emb, sigma, _ = ideal_maps(inst)
    terms = image_loss(emb, sigma, torch.full((1, 16, 16), 0.5), inst)
    assert float(terms[0]) == 0.0 and abs(float(terms[1]) - 0.25) < 1e-6


def test_batch_loss_backpropagates_to_all_outputs():
    out = torch.zeros(2, 5, 32, 32, requires_grad=True)
    loss = SpatialEmbeddingLoss()(out, torch.stack([two_squares(), two_squares()]))
    loss.backward()
    assert torch.isfinite(loss) and out.grad.abs().sum(dim=(0, 2, 3)).gt(0).all()
