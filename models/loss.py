"""Spatial-embedding loss of BPartIS: Lovasz hinge on each instance's Gaussian, seed regression,
sigma smoothness (Neven et al. 2019; Yildirim & Cole 2021), vectorised over instances."""
from __future__ import annotations

import torch
from torch import nn

from models.network import N_SIGMA, SIGMA_SCALE, interpret

W_INSTANCE = 1.0  # lambda 1: Lovasz hinge of each instance's Gaussian
W_SEED = 1.0  # lambda 2: seed map regressed to phi on foreground, to 0 on background
W_SMOOTH = 10.0  # lambda 3: sigma smoothness within each instance
FOREGROUND_WEIGHT = 10.0
MAX_LOVASZ_INSTANCES = 48  # instances per image whose Lovasz term is computed each step


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss; ``(K, N)`` sorted 0/1 rows."""
    gts = gt_sorted.sum(1, keepdim=True)  # (K, 1)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1.0 - gt_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    jaccard[:, 1:] = jaccard[:, 1:] - jaccard[:, :-1]
    return jaccard


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean Lovasz hinge over ``K`` binary problems.

    Parameters
    ----------
    logits : (K, N) float, values in [-1, 1] (2 phi - 1)
    labels : (K, N) float in {0, 1}
    """
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs  # (K, N)
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    gt_sorted = torch.gather(labels, 1, perm)
    grad = lovasz_grad(gt_sorted)
    return (torch.relu(errors_sorted) * grad).sum(1).mean()


def image_loss(embedding, sigma, seed, instances, generator=None):
    """Loss terms of one image.

    Parameters
    ----------
    embedding : (2, H, W) float, pixel embeddings
    sigma : (N_SIGMA, H, W) float, raw sigma channels
    seed : (1, H, W) float, seed probabilities
    instances : (H, W) int64, 0 = background, instances numbered 1..K consecutively

    Returns
    -------
    instance_loss, seed_loss, smooth_loss : 0-d tensors
    """
    n_pixels = instances.numel()
    emb = embedding.reshape(2, -1)  # (2, N)
    sig = sigma.reshape(N_SIGMA, -1)  # (S, N)
    seed = seed.reshape(-1)  # (N,)
    inst = instances.reshape(-1)
    fg = inst > 0
    n_instances = int(inst.max()) if fg.any() else 0
    zero = embedding.sum() * 0.0
    if n_instances == 0:
        return zero, (seed ** 2).sum() / n_pixels, zero

    idx = inst[fg] - 1  # (F,) instance index of each foreground pixel
    counts = torch.bincount(idx, minlength=n_instances).clamp(min=1).to(emb.dtype)  # (K,)
    emb_fg, sig_fg = emb[:, fg], sig[:, fg]  # (2, F), (S, F)
    like = dict(dtype=emb.dtype, device=emb.device)  # new tensors beside the outputs (CPU or GPU)
    center = torch.zeros(2, n_instances, **like).index_add_(1, idx, emb_fg) / counts
    s_mean = torch.zeros(N_SIGMA, n_instances, **like).index_add_(1, idx, sig_fg) / counts
    s_exp = torch.exp(s_mean * SIGMA_SCALE)  # (S, K), 1 / (2 sigma^2)

    # sigma smoothness: sigma inside each instance close to the instance mean
    sq = ((sig_fg - s_mean[:, idx].detach()) ** 2).mean(0)  # (F,)
    smooth = (torch.zeros(n_instances, **like).index_add_(0, idx, sq) / counts).mean()

    # seed: regress to phi of the own instance on foreground, to 0 on background
    phi_own = torch.exp(-(s_exp[:, idx] * (emb_fg - center[:, idx]) ** 2).sum(0))  # (F,)
    seed_loss = (FOREGROUND_WEIGHT * ((seed[fg] - phi_own.detach()) ** 2).sum()
                 + (seed[~fg] ** 2).sum()) / n_pixels

    # Lovasz hinge on phi of (a sample of) the instances, all at once
    chosen = torch.arange(n_instances)
    if n_instances > MAX_LOVASZ_INSTANCES:  # drawn on the CPU (the generator's device), then moved
        chosen = torch.randperm(n_instances, generator=generator)[:MAX_LOVASZ_INSTANCES]
    chosen = chosen.to(emb.device)
    dist = (s_exp[:, chosen, None] * (emb[:, None, :] - center[:, chosen, None]) ** 2).sum(0)
    phi = torch.exp(-dist)  # (K', N)
    labels = (inst[None, :] == (chosen[:, None] + 1)).to(emb.dtype)
    instance_loss = lovasz_hinge(2.0 * phi - 1.0, labels)
    return instance_loss, seed_loss, smooth


class SpatialEmbeddingLoss(nn.Module):
    """Batch loss: ``W_INSTANCE * lovasz + W_SEED * seed + W_SMOOTH * smoothness``, mean over images."""

    def forward(self, output, instances, return_terms=False):
        """``output`` (B, 5, H, W) raw network output; ``instances`` (B, H, W) int64."""
        embedding, sigma, seed = interpret(output.float())
        totals = torch.zeros(3, device=output.device)
        loss = output.sum() * 0.0
        for b in range(output.shape[0]):
            terms = image_loss(embedding[b], sigma[b], seed[b], instances[b])
            loss = loss + W_INSTANCE * terms[0] + W_SEED * terms[1] + W_SMOOTH * terms[2]
            totals += torch.stack([t.detach() for t in terms])
        loss = loss / output.shape[0]
        if return_terms:
            return loss, (totals / output.shape[0]).cpu()
        return loss
