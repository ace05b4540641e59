import torch

from models.cluster import cluster_instances
from models.network import PIXEL_SCALE, SIGMA_SCALE, coordinate_map


def embed(inst, radius_px=4.0):
    h, w = inst.shape
    emb = coordinate_map(h, w).clone()
    for k in inst.unique()[1:]:
        m = inst == k
        emb[:, m] = emb[:, m].mean(1, keepdim=True)
    s = float(torch.log(torch.tensor(1.0 / (2 * (radius_px * PIXEL_SCALE) ** 2)))) / SIGMA_SCALE
    return emb, torch.full((2, h, w), s), (inst > 0).float()


def test_recovers_separate_instances_exactly():
    inst = torch.zeros(48, 48, dtype=torch.long)
    inst[2:12, 2:12] = 1
    inst[20:30, 5:15] = 2
    inst[30:44, 30:46] = 3
    labels = cluster_instances(*embed(inst))
    assert labels.max() == 3
    for k in (1, 2, 3):
        ids = labels[inst == k].unique()
        assert ids.numel() == 1 and int(ids) > 0
    assert (labels[inst == 0] == 0).all()


def test_touching_particles_are_split_by_their_embeddings():
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[8:24, 4:16] = 1
    inst[8:24, 16:28] = 2  # shares an edge with 1
    labels = cluster_instances(*embed(inst))
    assert labels.max() == 2 and labels[inst == 1].unique().numel() == 1


def test_small_proposals_and_low_seeds_are_dropped():
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[2:4, 2:4] = 1  # 4 px < min size
    inst[10:20, 10:20] = 2
    emb, sigma, seed = embed(inst)
    labels = cluster_instances(emb, sigma, seed, min_instance_px=16)
    assert labels.max() == 1 and (labels[inst == 1] == 0).all()
    assert cluster_instances(emb, sigma, seed * 0.4).max() == 0


def test_rim_pixels_below_the_seed_threshold_still_join_their_instance():
    # the seed map falls towards an instance's rim; seeds need a high score, joining needs only
    # the foreground's 0.5 (published clustering), so a raised seed threshold keeps whole masks
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[8:24, 8:24] = 1
    emb, sigma, seed = embed(inst)
    seed[8:24, 8:24] = 0.55
    seed[12:20, 12:20] = 0.95  # the core
    seed[8, 8:24] = 0.45  # top row: not foreground
    labels = cluster_instances(emb, sigma, seed, seed_threshold=0.9)
    assert labels.max() == 1
    assert (labels[9:24, 8:24] == 1).all() and (labels[8] == 0).all()
    tied = cluster_instances(emb, sigma, seed, seed_threshold=0.9, foreground_threshold=0.9)
    assert int((tied == 1).sum()) == 64  # only the core when the foreground is tied to the seeds


def test_a_lower_phi_threshold_takes_in_an_uncertain_rim():
    # rim pixels whose embeddings miss the centre a little (phi = 0.45, as an under-trained
    # network gives near the edges) join at phi > 0.4, not at the published 0.5
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[8:24, 8:24] = 1
    emb, sigma, seed = embed(inst)
    bandwidth = float(torch.exp(sigma[0, 0, 0] * SIGMA_SCALE))
    miss = (float(torch.log(torch.tensor(1 / 0.45))) / bandwidth) ** 0.5
    rim = (inst == 1) & ~torch.nn.functional.pad(torch.ones(14, 14, dtype=torch.bool), (9, 9, 9, 9))
    emb[0, rim] += miss
    seed[rim] = 0.7  # the seed falls towards the edge: the core seeds the instance
    core = int((inst == 1).sum() - rim.sum())
    assert int((cluster_instances(emb, sigma, seed) == 1).sum()) == core
    assert int((cluster_instances(emb, sigma, seed, phi_threshold=0.4) == 1).sum()) == int((inst == 1).sum())


def test_refining_the_centre_keeps_a_particle_whole_when_its_seed_sits_off_centre():
    # an under-trained offset field: embeddings spread along x over 1.3 Gaussian radii, and the
    # strongest seed on the particle's left edge. Around that seed's own embedding (published) the
    # right quarter falls outside, and its own proposal is mostly claimed already, so the mask
    # is cut; re-assigned around the first proposal's mean embedding, the particle is whole
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[8:24, 8:24] = 1
    emb, sigma, seed = embed(inst)
    radius = 4.0 * PIXEL_SCALE * (2 * float(torch.log(torch.tensor(2.0)))) ** 0.5  # phi = 0.5 there
    columns = torch.arange(32, dtype=torch.float32).expand(32, 32)
    emb[0, inst == 1] += (0.65 * radius * (columns - 15.5) / 7.5)[inst == 1]
    seed[inst == 1] = 0.8
    seed[8:24, 8] = 0.9  # the left edge seeds the particle
    published = cluster_instances(emb, sigma, seed)
    assert published.max() == 1 and (published[8:24, 8:20] == 1).all()  # the part near the seed
    assert (published[:, 20:] == 0).all()
    refined = cluster_instances(emb, sigma, seed, refine_centre=True)
    assert refined.max() == 1 and (refined[inst == 1] == 1).all() and (refined[inst == 0] == 0).all()
