"""Monte-Carlo dropout inference of BPartIS with mutual-information uncertainty filtering."""
from __future__ import annotations

import functools
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from idx.errors import ImageError, WeightsError
from models.cluster import FOREGROUND_THRESHOLD, MIN_INSTANCE_PX, PHI_THRESHOLD, SEED_THRESHOLD, cluster_instances
from models.edges import snap_edges
from models.instance_filter import InstanceFilter, apply_filter, instance_features
from models.network import (
    BPartIS,
    FusedGraphs,
    cast_to_bfloat16,
    draw_dropout_masks,
    fold_batchnorm,
    interpret,
    next_dropout_masks,
    skip_sizes,
    usable_device,
)

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "bpartis-emps.pt"
MC_SAMPLES = 30
TU_DEFAULT = 0.0125  # published instance-uncertainty threshold; see the model card for ours
WORKING_SIZE = 512  # images are segmented at 512 x 512, the resolution the model was trained at
TUNE_ALLOCATOR = True  # segmenters on the CPU call keep_freed_memory() (benchmarks turn it off)
# Images whose particles are small at the working size are segmented at ZOOM x the working size
# when the weights' card sets ``zoom_below_px``: a first deterministic pass (T = 1) at the working
# size measures the typical (area-weighted median) instance area, and below that many pixels the
# Monte-Carlo pass runs on the image upsampled ZOOM times (the network was trained on 2x-magnified
# crops as well). Measured on EMPS fit-split images of small particles (T = 8, no filter): recall@0.5
# of particles under 100 px rose 0.14 -> 0.61, of 100-400 px 0.64 -> 0.96.
ZOOM = 2
# Monte-Carlo samples per forward batch: as many as hold this many pixels (5 at 512 px, the fastest
# of 1-15 on 2 cores; 2 at 1024 px, where 5 took 14.8 s per image at T = 30 and 2 took 8.3 s:
# the larger batch's activations leave the caches; fifteenth session, runs/s15/mcbatch.py)
MC_BATCH_PIXELS = 5 * 512 * 512
EPS = 1e-7
# The 8 symmetries of the square as (transpose, flip rows, flip columns), identity first; the
# Monte-Carlo samples cycle through them when test-time augmentation is on.
SYMMETRIES = tuple((t, v, h) for t in (False, True) for v in (False, True) for h in (False, True))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of Bernoulli probabilities ``p``, already clamped to ``[EPS, 1 - EPS]``."""
    return -(p * p.log() + (1 - p) * (1 - p).log())


def transform_input(x: torch.Tensor, symmetry) -> torch.Tensor:
    """``x (B, C, H, W)`` flipped along columns, then rows, then transposed, as ``symmetry`` says."""
    transpose, flip_rows, flip_cols = symmetry
    if flip_cols:
        x = x.flip(-1)
    if flip_rows:
        x = x.flip(-2)
    return x.transpose(-1, -2) if transpose else x


def untransform_output(out: torch.Tensor, symmetry) -> torch.Tensor:
    """Map a raw ``(B, 5, H, W)`` output for :func:`transform_input` ``(x, symmetry)`` back to the
    frame of ``x``: the maps are moved back and the offset vector (channels 0, 1; raw, before the
    odd tanh) and sigma (2, 3) are turned with them, so it is the output the network would give
    if it were exactly equivariant."""
    transpose, flip_rows, flip_cols = symmetry
    if transpose:
        out = out.transpose(-1, -2)[:, [1, 0, 3, 2, 4]]
    if flip_rows:
        out = out.flip(-2)
        out[:, 1].neg_()
    if flip_cols:
        out = out.flip(-1)
        out[:, 0].neg_()
    return out


def read_checkpoint(path: Path, remedy: str):
    """What ``torch.save`` wrote to the existing file ``path`` (tensors and plain data only, on
    the CPU); an empty or unreadable file is a one-line :class:`WeightsError` ending in ``remedy``."""
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty; {remedy}")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head != b"PK" and not head.startswith(b"\x80"):  # torch.save: a zip, or a legacy pickle
        raise WeightsError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip or a pickle, "
                           f"this file starts with {head!r}); pass the .pt weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        lines = str(exc).splitlines() or [""]
        # torch's weights-only refusal puts its reason on a later line
        reason = next((line.strip() for line in lines if "WeightsUnpickler error" in line), lines[0])
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                           f"{reason[:160]}); {remedy}") from None


def load_weights(path: str | Path) -> dict:
    """Read a BPartIS state dict from ``path`` (a plain state dict or a training checkpoint).

    Raises
    ------
    WeightsError
        Missing, truncated or unreadable file, or keys/shapes that are not BPartIS's.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"no BPartIS weights at {path}; put the .pt file there or pass weights=PATH")
    state = read_checkpoint(path, "copy it again or re-train it")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = BPartIS().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"{path}: not a BPartIS checkpoint ({len(missing)} keys missing, e.g. "
                           f"{(missing or unexpected)[0]!r}; {len(unexpected)} unexpected)")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                               f"BPartIS needs {tuple(value.shape)}")
    return state


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep and reuse freed blocks of up to 32 MB instead of unmapping them.

    Monte-Carlo inference allocates and frees activations of 5-30 MB hundreds of times per image;
    with glibc's defaults each one is a fresh ``mmap`` whose pages fault in one by one, which cost
    ~0.4 s per image at T = 30 on 2 cores (the same advice as PyTorch's CPU tuning guide, which
    suggests jemalloc or tcmalloc). Sets ``M_MMAP_THRESHOLD`` (32 MB, glibc's maximum) and
    ``M_TRIM_THRESHOLD`` (1 GiB) once per process; the process then keeps up to that much freed
    memory for reuse. No-op (False) where the C library is not glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mc_batch(height: int, width: int) -> int:
    """Monte-Carlo samples per forward batch at this working size (:data:`MC_BATCH_PIXELS`)."""
    return max(1, math.ceil(MC_BATCH_PIXELS / (height * width)))


@dataclass
class Segmentation:
    """Result of segmenting one image, at the input resolution.

    labels : (H, W) int32, 0 = background, instances 1..K
    uncertainty : (H, W) float32, per-pixel mutual information (nats)
    seed : (H, W) float32, mean seed probability
    instance_uncertainty : (K,) float32, mean MI of each kept instance (index i -> label i + 1)
    n_removed : instances dropped by the filter (learned or uncertainty threshold)
    zoom : the working-size factor the image was segmented at (1, or 2 for small particles)
    scores : (K,) float32, confidence of each kept instance, for ranking: the learned filter's
        probability that it is a true particle, else its mean seed probability
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    seed: np.ndarray
    instance_uncertainty: np.ndarray
    n_removed: int = 0
    params: dict = field(default_factory=dict)
    scores: np.ndarray | None = None
    zoom: int = 1

    @property
    def count(self) -> int:
        return int(self.labels.max())

    def to_dict(self) -> dict:
        """JSON-ready summary; ``params.tu`` is None unless the t_u filter ran (``params`` itself
        keeps the card's value: it is part of the stored runs' identity)."""
        params = dict(self.params)
        if params.get("filter_kind", "mi") != "mi":
            params["tu"] = None
        return {"count": self.count, "n_removed": self.n_removed, "shape": list(self.labels.shape), "zoom": self.zoom,
                "instance_uncertainty": [round(float(u), 6) for u in self.instance_uncertainty],
                "params": params}


def prepare_image(image: np.ndarray) -> np.ndarray:
    """Any image array (grey, RGB, RGBA, 16-bit, float) -> uint8 (H, W, 3)."""
    from miners.images import (  # no torch there; shared image conventions
        as_uint8,
        to_rgb,
    )

    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageError(f"image must be a 2-D greyscale or (H, W, 3/4) colour array, got shape {array.shape}")
    if min(array.shape[:2]) < 2:
        raise ImageError(f"image of {array.shape[1]}x{array.shape[0]} px is too small to segment")
    return to_rgb(as_uint8(array))


def align_embeddings(embedding: torch.Tensor, which, reference: torch.Tensor, foreground: torch.Tensor):
    """Shift in place the embeddings of samples taken under a symmetry onto the identity's.

    An instance's cluster centre is the mean of its pixel embeddings, so the network is free to
    put every centre at the same constant displacement from the particle (ours: ~110 px right and
    down at 512 px). A flipped input moves that displacement to the other side, so each mapped-back
    sample is shifted by the median difference of its embedding from the ``reference`` identity
    embedding ``(2, S, S)`` over the ``foreground`` pixels ``(S, S)`` bool (all pixels if none).

    ``embedding (n, 2, S, S)``; ``which[j]`` is sample j's index into :data:`SYMMETRIES` (0: identity).
    """
    if not any(which):
        return
    mask = foreground if bool(foreground.any()) else torch.ones_like(foreground)
    index = mask.flatten().nonzero().squeeze(1)  # found once for all the samples
    ref = reference.flatten(1).index_select(1, index)  # (2, K)
    for j, k in enumerate(which):
        if k:
            rows = embedding[j].flatten(1).index_select(1, index)  # (2, K)
            shift = rows.sub_(ref).median(1).values  # (2,)
            embedding[j] -= shift[:, None, None]


class ParticleSegmenter:
    """BPartIS particle instance segmentation with Monte-Carlo dropout.

    Parameters
    ----------
    weights : path, optional
        State dict (ours or the published ``seg-model.pt``); default: the shipped weights.
    device : str
        'cpu' or 'cuda'.
    mc_samples : int
        Monte-Carlo dropout samples T; 1 gives the discriminative model (dropout off).
    tu : float, optional
        Use the published uncertainty filter: instances whose mean MI exceeds ``tu`` are removed.
        None (default): the learned instance filter shipped with the weights (see
        :mod:`models.instance_filter`), or, for weights without one, their tuned t_u.
    filter : bool
        Apply a filter at all (needs ``mc_samples > 1``: both use the Monte-Carlo uncertainty).
    bf16 : bool
        bfloat16 autocast on CPU (AMX) / CUDA.
    tta : bool, optional
        Test-time augmentation: the Monte-Carlo samples cycle through the 8 flips and transposes of
        the image (only the 4 flips for a non-square working image), each output mapped back, so
        the mutual information also measures how much the prediction changes with the view.
        None (default): as the weights' thresholds were tuned (their card's ``tta``; off without one).
    model : BPartIS, optional
        An in-memory model (training validation); ``weights`` is then ignored.
    compile : bool
        CPU: run the network as traced graphs fused by PyTorch's oneDNN Graph fuser
        (:class:`models.network.FusedGraphs`: each conv writes its ELU, or its dropout mask, skip
        and ELU, as it stores its output): ~1.4 s less per image at T = 30 on 2 cores, for a
        ~2 s trace on the first image of each working size. No compiler is needed. The ``idx``
        commands turn it on (``--no-compile`` turns it off). Falls back, with one warning, to
        the plain model where tracing fails.
    zoom : int, optional
        1 or 2: segment at ``zoom`` x the working size (2 finds particles of a few pixels across
        at 512 x 512 that 1 misses; it costs ~6x). None (default): the weights' card decides per
        image (``zoom_below_px``: zoom 2 where a T = 1 pass finds a typical instance area below
        it, :meth:`typical_instance_area`, else 1); 1 without a card or with ``tu`` (the t_u
        route was tuned without zoom).
    edges : float or bool, optional
        Snap each instance's one-pixel rim to the image's edge (:func:`models.edges.snap_edges`)
        with this ``alpha``, on images segmented at zoom 1 (at 2x a working pixel is half a pixel
        of the 512 image, and on validation snapping there lost AP50 and AP75); False: keep the
        network's masks. None (default): the weights' card's ``edge_alpha`` (off without one,
        and with ``tu``: the published route).
    refine_centre : bool, optional
        Assign each proposal once more around the mean embedding of its pixels
        (:func:`models.cluster.cluster_instances`). None (default): the weights' card's
        ``refine_centre`` (off without one, and with ``tu``: the published clustering).
    smooth : float, optional
        Blur the image the network sees with a Gaussian of this sigma (pixels of the 512 x 512
        working image, times the zoom) in every pass; the filter's cues and rim snapping still
        read the unblurred image. For finely textured particles (mesoporous silica) whose seeds
        the shipped weights, trained mostly at 256 px, leave faint: 0.5 restores them. None or
        0 (default): off (on validation 0.5 scored AP 0.733 against 0.737, AP50 0.971 against
        0.960, with a filter refitted for it; model card, Limits).
    """

    def __init__(self, weights=None, device="cpu", mc_samples=MC_SAMPLES, tu=None, filter=True,
                 bf16=True, size=WORKING_SIZE, seed_threshold=None, min_instance_px=None, model=None,
                 rng_seed=0, tta=None, compile=False, zoom=None, edges=None, refine_centre=None, smooth=None):
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        if smooth is not None and not (math.isfinite(smooth) and smooth >= 0):
            raise ValueError(f"smooth must be a sigma >= 0 (pixels), got {smooth!r}")
        self.smooth = float(smooth) if smooth else None
        self.device = usable_device(device)
        if model is None:
            path = Path(weights) if weights else DEFAULT_WEIGHTS
            model = BPartIS()
            model.load_state_dict(load_weights(path))
            self.weights_path = path
            self.weights_sha256 = file_sha256(path)
        else:
            self.weights_path, self.weights_sha256 = None, None
        self.model = fold_batchnorm(model).to(self.device).to(memory_format=torch.channels_last)
        if bf16:
            cast_to_bfloat16(self.model)
        tuned = tuned_params(self.weights_path) if self.weights_path else {}
        self.tu = tuned.get("tu", TU_DEFAULT) if tu is None else tu
        self.mc_samples, self.filter = mc_samples, filter and mc_samples > 1
        # said once, at the first image segmented (a run whose panels are all skipped says nothing)
        self._one_sample_warning = None
        if tu is not None and filter and mc_samples <= 1:
            self._one_sample_warning = (f"t_u {tu:g} ignored: one sample (mc_samples 1) has no Monte-Carlo "
                                        "uncertainty to filter on; give --mc-samples 2 or more")
        elif filter and mc_samples <= 1:
            self._one_sample_warning = ("the false-positive filter is off at mc_samples 1 (no Monte-Carlo "
                                        "uncertainty to filter on): expect more false particles; give "
                                        "--mc-samples 2 or more")
        self.instance_filter: InstanceFilter | None = tuned.get("instance_filter") if tu is None else None
        self.bf16, self.size = bf16, size
        # the clustering tuned with the filter in use: the t_u sweep's when tu is given, else the
        # learned filter's (also without a filter: --no-filter shows what the filter removed). A
        # card without the t_u route's own value lends it the learned filter's, except for the
        # mask thresholds (lowered for the learned filter only): there the t_u route keeps 0.5
        def tuned_value(name, default, lent=True):
            if tu is not None and (f"tu_{name}" in tuned or not lent):
                return tuned.get(f"tu_{name}", default)
            return tuned.get(name, default)

        self.seed_threshold = tuned_value("seed_threshold", SEED_THRESHOLD) if seed_threshold is None \
            else seed_threshold
        self.min_instance_px = tuned_value("min_instance_px", MIN_INSTANCE_PX) if min_instance_px is None \
            else min_instance_px
        self.foreground_threshold = tuned_value("foreground_threshold", FOREGROUND_THRESHOLD, lent=False)
        self.phi_threshold = tuned_value("phi_threshold", PHI_THRESHOLD, lent=False)
        self.rng_seed, self.tta = rng_seed, bool(tuned.get("tta", False) if tta is None else tta)
        if zoom not in (None, 1, ZOOM):
            raise ValueError(f"zoom must be 1, {ZOOM} or None (the card's rule), got {zoom!r}")
        self.zoom = zoom
        # tuned with the learned filter (and --no-filter keeps its clustering); the t_u route is
        # the published one: no zoom rule, no rim snapping, no re-assignment
        def learned_route(name, default=None):
            return tuned.get(name, default) if tu is None else default

        self.zoom_below_px = learned_route("zoom_below_px") if zoom is None else None
        edges = learned_route("edge_alpha") if edges is None else edges
        self.edge_alpha = None if edges is False or edges is None else float(edges)
        self.refine_centre = bool(learned_route("refine_centre", False) if refine_centre is None else refine_centre)
        self.compile = bool(compile) and self.device.type == "cpu"
        self.graphs = FusedGraphs(self.model) if self.compile else None
        if self.device.type == "cpu" and TUNE_ALLOCATOR:
            keep_freed_memory()

    @property
    def params(self) -> dict:
        kind = "none" if not self.filter else "learned" if self.instance_filter is not None else "mi"
        return {"mc_samples": self.mc_samples, "tu": self.tu, "filter": self.filter, "filter_kind": kind,
                "filter_threshold": self.instance_filter.threshold if kind == "learned" else None,
                "size": self.size,
                "seed_threshold": self.seed_threshold, "min_instance_px": self.min_instance_px,
                "foreground_threshold": self.foreground_threshold, "phi_threshold": self.phi_threshold,
                "zoom": self.zoom if self.zoom is not None else
                f"{ZOOM} below {self.zoom_below_px:g} px" if self.zoom_below_px else 1,
                "edge_alpha": self.edge_alpha, "refine_centre": self.refine_centre, "bf16": self.bf16,
                "tta": self.tta, "compile": self.compile,
                # absent when off: runs stored before the option keep their ids (no new rows on re-runs)
                **({"smooth": self.smooth} if self.smooth else {})}

    def _set_mode(self, mc: bool) -> None:
        self.model.eval()
        if mc:
            for module in self.model.modules():
                if isinstance(module, torch.nn.Dropout2d):
                    module.train()

    def predict_maps(self, image: np.ndarray, zoom: int = 1):
        """Mean embedding, sigma, seed and MI maps at the working size (times ``zoom``).

        Returns tensors ``embedding (2, S, S)``, ``sigma (2, S, S)``, ``seed (S, S)``, ``mi (S, S)``.
        """
        return self.predict_maps_by_t(image, [self.mc_samples], zoom)[self.mc_samples]

    @torch.no_grad()
    def predict_maps_by_t(self, image: np.ndarray, ts, zoom: int = 1) -> dict:
        """``{T: (embedding, sigma, seed, mi)}`` for every T in ``ts`` from ONE run of max(ts)
        Monte-Carlo samples: the estimate at T averages the first T samples (they are i.i.d.), so
        a sweep over T costs max(ts) forward passes. Dropout is on when ``mc_samples > 1``.
        """
        return self._maps(self.network_rgb(image, zoom), ts, self.mc_samples > 1)

    def _maps(self, rgb: np.ndarray, ts, mc: bool) -> dict:
        x = torch.from_numpy(np.ascontiguousarray(rgb).copy()).permute(2, 0, 1).float().div_(255.0)
        x = x.unsqueeze(0).to(self.device).contiguous(memory_format=torch.channels_last)
        self._set_mode(mc)
        if mc:  # the same masks whatever the batch size: reproducible per image
            draw_dropout_masks(self.model, max(ts), torch.Generator().manual_seed(self.rng_seed))
        try:
            return self._sample_maps(x, ts)
        finally:
            draw_dropout_masks(self.model, 0)

    def working_rgb(self, image: np.ndarray, zoom: int = 1) -> np.ndarray:
        """The image as the network sees it: uint8 RGB (S, S, 3), S = ``size`` x ``zoom`` (or the
        input's size)."""
        rgb = prepare_image(image)
        if self.size:
            side = self.size * zoom
            rgb = np.asarray(Image.fromarray(rgb).resize((side, side), Image.BICUBIC))
        return rgb

    def network_rgb(self, image: np.ndarray, zoom: int = 1) -> np.ndarray:
        """:meth:`working_rgb`, blurred as ``smooth`` says: what the network is given."""
        rgb = self.working_rgb(image, zoom)
        if not self.smooth:
            return rgb
        from scipy.ndimage import gaussian_filter

        sigma = self.smooth * zoom
        return np.clip(np.rint(gaussian_filter(rgb.astype(np.float32), (sigma, sigma, 0))), 0, 255).astype(np.uint8)

    @torch.no_grad()
    def typical_instance_area(self, image: np.ndarray, seed_threshold: float | None = None,
                              min_instance_px: int | None = None) -> float | None:
        """Area-weighted median instance area (px at the working size): the area of the instance
        that holds the median instance pixel, from one deterministic pass (T = 1, no dropout, no
        test-time augmentation) clustered with the segmenter's (or the given) ``seed_threshold``
        and ``min_instance_px`` and the published mask thresholds (0.5: the zoom rule was chosen
        with them); None if it finds none.

        Weighted by area, a few fragments beside one large particle do not make the image look
        like one of small particles (the plain median did: on EMPS train images such images lost
        up to 0.9 AP when zoomed)."""
        embedding, sigma, seed, _ = self._maps(self.network_rgb(image), [1], mc=False)[1]
        labels = cluster_instances(embedding.cpu(), sigma.cpu(), seed.cpu(),
                                   self.seed_threshold if seed_threshold is None else seed_threshold,
                                   self.min_instance_px if min_instance_px is None else min_instance_px)
        areas = np.bincount(labels.flatten().numpy())[1:]
        areas = np.sort(areas[areas > 0])
        if not len(areas):
            return None
        return float(areas[np.searchsorted(np.cumsum(areas), areas.sum() / 2)])

    def choose_zoom(self, image: np.ndarray) -> int:
        """1 or :data:`ZOOM`: the working-size factor for ``image`` (see ``zoom``)."""
        if self.zoom is not None:
            return self.zoom if self.size else 1
        if not self.zoom_below_px or not self.size:
            return 1
        area = self.typical_instance_area(image)
        return ZOOM if area is not None and area < self.zoom_below_px else 1

    def _sample_maps(self, x: torch.Tensor, ts) -> dict:
        symmetries = self.symmetries(x.shape[-2:], max(ts))
        views = torch.cat([transform_input(x, s) for s in symmetries]).contiguous(memory_format=torch.channels_last)
        heads, branches = self._run_head(views)  # everything before the first dropout: once per view
        sizes = skip_sizes(*views.shape[-2:])
        batch = mc_batch(*views.shape[-2:])
        sums, done, maps, reference = None, 0, {}, None
        for t in sorted(set(ts)):
            while done < t:
                n = min(batch, t - done)
                which = [(done + j) % len(symmetries) for j in range(n)]  # symmetry of each sample
                out = self._run_tail(heads[which].contiguous(memory_format=torch.channels_last),
                                     branches[which].contiguous(memory_format=torch.channels_last), sizes)
                out = out.to(torch.float32, memory_format=torch.contiguous_format)  # planar maps
                if len(symmetries) > 1:
                    out = torch.cat([untransform_output(out[j:j + 1], symmetries[k])
                                     for j, k in enumerate(which)])
                embedding, sigma, seed = interpret(out)  # (n,2,S,S), (n,2,S,S), (n,1,S,S)
                if len(symmetries) > 1:
                    if reference is None:  # the first sample: the identity
                        reference = embedding[0].clone(), seed[0, 0] > 0.5
                    align_embeddings(embedding, which, *reference)
                p = seed[:, 0].clamp(EPS, 1 - EPS)
                entropy = binary_entropy(p)  # (n, S, S)
                parts = [embedding.sum(0), sigma.sum(0), p.sum(0), entropy.sum(0)]
                sums = parts if sums is None else [a + b for a, b in zip(sums, parts)]
                done += n
            emb, sig, seed_mean, mean_entropy = (v / t for v in sums)
            pm = seed_mean.clamp(EPS, 1 - EPS)
            mi = binary_entropy(pm) - mean_entropy
            maps[t] = (emb, sig, seed_mean, mi.clamp(min=0.0))
        return maps

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _run_head(self, views: torch.Tensor):
        """``(head, branch)`` of the model for the batch of ``views`` (B, 3, S, S) float32."""
        if self.graphs is not None:
            fused = self.graphs.head(views.to(torch.bfloat16) if self.bf16 else views)
            if fused is not None:
                return fused
        with self._autocast():
            return self.model.encode_head(views)

    def _run_tail(self, head: torch.Tensor, branch: torch.Tensor, sizes) -> torch.Tensor:
        """Raw ``(n, 5, S, S)`` outputs of the samples whose heads and branches are given, with
        the next dropout masks (the same masks on the fused and the plain path)."""
        masks = next_dropout_masks(self.model, head)
        if self.graphs is not None:
            out = self.graphs.tail(head, branch, sizes, masks)
            if out is not None:
                return out
        with self._autocast():
            return self.model.forward_from_head(head, branch, sizes, masks)

    def symmetries(self, shape, n_samples: int) -> tuple:
        """The symmetries the ``n_samples`` Monte-Carlo samples cycle through for a working image of
        ``shape`` (H, W): the identity alone without test-time augmentation."""
        if not self.tta or n_samples < 2:
            return SYMMETRIES[:1]
        usable = SYMMETRIES if shape[0] == shape[1] else SYMMETRIES[:4]
        return usable[:n_samples]

    def segment(self, image: np.ndarray, exclude_mask: np.ndarray | None = None) -> Segmentation:
        """Segment the particles of one image.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, 3|4), any integer or float dtype
            Brought to 8-bit grey levels as ``miners.images.as_uint8`` does: uint8 as is, floats in
            [0, 1] or [0, 255] on that scale, 16-bit and other images stretched over their own
            range (the same pixels as uint8 and as uint16 * 257 can then segment differently).
        exclude_mask : ndarray of bool, shape (H, W), optional
            Pixels that cannot be particles (scale bar, its label); instances mostly inside are removed.

        Returns
        -------
        Segmentation at the input resolution.
        """
        if self._one_sample_warning:
            log.warning("%s", self._one_sample_warning)
            self._one_sample_warning = None
        array = np.asarray(image)
        height, width = array.shape[:2]
        zoom = self.choose_zoom(array)
        embedding, sigma, seed, mi = self.predict_maps(array, zoom)
        seed_np = seed.cpu().numpy().astype(np.float32)
        labels = cluster_instances(embedding.cpu(), sigma.cpu(), seed.cpu(), self.seed_threshold,
                                   self.min_instance_px * zoom ** 2, self.foreground_threshold,
                                   self.phi_threshold, self.refine_centre).numpy()
        mi_np = mi.cpu().numpy().astype(np.float32)
        grey = functools.cache(lambda: grey_image(self.working_rgb(array, zoom)))  # made once, if needed
        labels, inst_mi, scores, removed = self.filter_labels(labels, seed_np, mi_np, sigma.cpu().numpy(),
                                                              grey, zoom)
        if self.edge_alpha is not None and zoom == 1:  # rims only: the instances and their numbers stay
            labels = snap_edges(labels, grey(), self.edge_alpha)
        per_instance = np.stack([inst_mi, scores], axis=1)  # (K, 2) follows the labels
        if (height, width) != labels.shape:
            labels = resize_labels(labels, (height, width))
            mi_np = np.asarray(Image.fromarray(mi_np).resize((width, height), Image.BILINEAR))
            seed_np = np.asarray(Image.fromarray(seed_np).resize((width, height), Image.BILINEAR))
            labels, per_instance = compact_labels(labels, per_instance)  # tiny instances may vanish
        if exclude_mask is not None:
            labels, keep = drop_masked(labels, np.asarray(exclude_mask, dtype=bool))
            per_instance = per_instance[keep]
        inst_mi, scores = per_instance[:, 0].astype(np.float32), per_instance[:, 1].astype(np.float32)
        return Segmentation(labels.astype(np.int32), mi_np, seed_np, inst_mi, removed, self.params, scores, zoom)

    def filter_labels(self, labels: np.ndarray, seed: np.ndarray, mi: np.ndarray, sigma: np.ndarray,
                      grey, zoom: int = 1):
        """Apply this segmenter's filter (learned, t_u, or none) to clustered ``labels`` (S, S).

        ``seed``, ``mi`` (S, S) and ``sigma`` (2, S, S) are the mean maps; ``grey`` is a
        callable giving the (S, S) grey image (only the learned filter needs it); ``zoom`` the
        factor the working size was enlarged by (the filter's features are put back in
        working-size units).

        Returns ``(labels 1..K, mean MI (K,), scores (K,), number removed)``.
        """
        if self.filter and self.instance_filter is not None:
            features = instance_features(labels, seed, mi, sigma, grey(), zoom)
            kept, scores = self.instance_filter.apply(labels, features)
            return kept, mean_per_instance(kept, mi), scores.astype(np.float32), len(features) - len(scores)
        labels, inst_mi, removed = filter_instances(labels, mi, self.tu if self.filter else None)
        return labels, inst_mi, mean_per_instance(labels, seed), removed


def grey_image(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 grey level (mean of the channels) of an (H, W, 3) or (H, W) image."""
    array = np.asarray(rgb, np.float32)
    return array.mean(2) if array.ndim == 3 else array


def mean_per_instance(labels: np.ndarray, values: np.ndarray, drop_empty: bool = True) -> np.ndarray:
    """Mean of ``values`` (H, W) over each instance 1..max(labels) of ``labels`` (H, W), float32.

    With ``drop_empty`` labels with no pixels are left out (so entry i is label i + 1 for maps
    numbered 1..K consecutively).
    """
    n = int(labels.max()) if labels.size else 0
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=np.asarray(values, np.float64).ravel(), minlength=n + 1)[1:]
    means = (sums / np.maximum(counts, 1)).astype(np.float32)
    return means[counts > 0] if drop_empty else means


def filter_instances(labels: np.ndarray, mi: np.ndarray, tu: float | None):
    """Remove instances whose mean mutual information exceeds ``tu``; renumber 1..K.

    Returns ``(labels, mean MI of kept instances (K,), number removed)``.
    """
    n = int(labels.max())
    if n == 0:
        return labels.astype(np.int32), np.zeros(0, np.float32), 0
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    mean_mi = mean_per_instance(labels, mi, drop_empty=False)
    keep = counts > 0
    if tu is not None:
        keep &= mean_mi <= tu
    return apply_filter(labels, keep), mean_mi[keep], int((counts > 0).sum() - keep.sum())


def resize_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Instance map ``labels`` resized to ``shape`` (H, W), label values kept; instances too small
    for the new size may vanish (:func:`compact_labels` renumbers).

    Enlarging is nearest neighbour. Shrinking is a majority vote: each output pixel covers a block
    of k x k source pixels (the map is first enlarged by nearest neighbour to k times the output
    size, k the smallest integer at least the shrink factor) and takes the instance holding the
    most of them, when that is at least half the block. Nearest-neighbour shrinking samples one
    pixel per block, off its centre (PIL takes the lower right of each 2 x 2 block): a 1024-px map of
    a zoomed image brought to 512 px moved every mask by half a source pixel (a quarter of an
    output pixel). Scored at 512 px on the shipped card's cached maps, the EMPS images the zoom
    rule sends to 2x went from AP75 0.764 to 0.799 and mean IoU 0.789 to 0.803 (7 validation
    images), 0.836 to 0.860 and 0.808 to 0.820 (25 test images); see the model card."""
    shape = tuple(int(s) for s in shape)
    if labels.shape == shape:
        return labels
    labels = np.asarray(labels).astype(np.int32)
    factors = [max(1, int(np.ceil(src / dst))) for src, dst in zip(labels.shape, shape)]
    if factors == [1, 1]:
        return np.asarray(Image.fromarray(labels).resize(shape[::-1], Image.NEAREST))
    (kh, kw), (h, w) = factors, shape
    if labels.shape != (h * kh, w * kw):  # enlarging by nearest neighbour loses nothing
        labels = np.asarray(Image.fromarray(labels).resize((w * kw, h * kh), Image.NEAREST))
    n = kh * kw
    block = np.sort(labels.reshape(h, kh, w, kw).transpose(0, 2, 1, 3).reshape(h, w, n), axis=-1)
    # the mode of each sorted block: the length of the run of equal labels ending at each place
    place = np.arange(n)
    starts = np.ones(block.shape, bool)
    starts[..., 1:] = block[..., 1:] != block[..., :-1]
    run = place - np.maximum.accumulate(np.where(starts, place, 0), axis=-1) + 1
    run[block == 0] = 0  # background never wins; ties go to the lower label
    longest = run.argmax(-1)[..., None]
    best = np.take_along_axis(block, longest, -1)[..., 0]
    best[2 * np.take_along_axis(run, longest, -1)[..., 0] < n] = 0
    return best


def compact_labels(labels: np.ndarray, values: np.ndarray):
    """Renumber ``labels`` 1..K over the instances present; ``values[i]`` belongs to label i + 1."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    return lut[labels], np.asarray(values)[present - 1]


def drop_masked(labels: np.ndarray, mask: np.ndarray, max_fraction: float = 0.5):
    """Remove instances with more than ``max_fraction`` of their pixels in ``mask``; renumber.

    ``labels`` must be numbered 1..K consecutively; returns ``(labels, keep (K,) bool)``.
    """
    if mask.shape != labels.shape:
        raise ValueError(f"exclude_mask shape {mask.shape} differs from image shape {labels.shape}")
    n = int(labels.max())
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    inside = np.bincount(labels[mask].ravel(), minlength=n + 1)[1:]
    keep = inside <= max_fraction * np.maximum(counts, 1)
    return apply_filter(labels, keep), keep


def tuned_params(weights=None) -> dict:
    """What was tuned on validation for ``weights``, from the JSON card beside them
    (``bpartis-emps.json``): ``tu``, ``seed_threshold``, ``min_instance_px`` (with the learned filter),
    ``tu_seed_threshold``, ``tu_min_instance_px`` (with the t_u filter, when they were tuned apart),
    ``foreground_threshold``, ``phi_threshold`` (the mask thresholds with the learned filter;
    ``tu_``-prefixed for the t_u route), ``tta``, ``zoom_below_px``, ``edge_alpha`` (rims snapped to
    the image's edges, :mod:`models.edges`), ``refine_centre`` (proposals re-assigned around their
    mean embedding, :func:`models.cluster.cluster_instances`) and ``instance_filter``
    (an :class:`InstanceFilter` read from the file the card names); {} if there is no card."""
    import json

    path = Path(weights) if weights else DEFAULT_WEIGHTS
    card = path.with_suffix(".json")
    if not card.exists():
        return {}
    try:
        data = json.loads(card.read_text())
        params = {k: type_(data[k]) for k, type_ in
                  (("tu", float), ("seed_threshold", float), ("min_instance_px", int),
                   ("tu_seed_threshold", float), ("tu_min_instance_px", int), ("tta", bool),
                   ("zoom_below_px", float), ("foreground_threshold", float), ("phi_threshold", float),
                   ("tu_foreground_threshold", float), ("tu_phi_threshold", float), ("edge_alpha", float),
                   ("refine_centre", bool))
                  if k in data}
    except (ValueError, TypeError) as exc:
        log.warning("%s: unreadable (%s); using the default thresholds", card, exc)
        return {}
    if data.get("instance_filter"):
        trees = card.parent / data["instance_filter"]
        try:
            params["instance_filter"] = InstanceFilter.from_dict(json.loads(trees.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: instance filter unreadable (%s); using the uncertainty threshold t_u", trees, exc)
    return params
