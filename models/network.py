"""BPartIS network: an ERFNet encoder with two decoders (offsets + sigmas, seed map).

The module and parameter names follow the published BPartIS / ImageDataExtractor 2.0
checkpoint (``seg-model.pt``) exactly, so that state dict loads with ``strict=True``.
Activations are ELU; decoder upsampling is bilinear interpolation followed by a 3x3 conv.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from idx.errors import IdxError

PIXEL_SCALE = 1.0 / 1024  # coordinate-map units per pixel, the same at every input size
SIGMA_SCALE = 10.0  # exp(SIGMA_SCALE * s) is the 1 / (2 sigma^2) factor of the Gaussian
N_SIGMA = 2
ENCODER_DROPOUT_64 = 0.03
ENCODER_DROPOUT_128 = 0.3
BN_EPS = 1e-3


def _elu(x: torch.Tensor) -> torch.Tensor:
    """ELU: PyTorch's, in place at inference (saves a copy of every activation); out of place
    with gradients and while tracing (the oneDNN Graph fuser only joins out-of-place ELUs to the
    conv before them; see :class:`FusedGraphs`)."""
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return F.elu(x)
    return F.elu(x, inplace=True)


def _residual_elu(out: torch.Tensor, skip: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``ELU(out * scale + skip)`` (``scale``: per-sample channel masks ``(B, C, 1, 1)``, or None);
    may overwrite ``out`` at inference."""
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return F.elu((out if scale is None else out * scale) + skip)
    if scale is not None:
        out.mul_(scale)
    return F.elu(out.add_(skip), inplace=True)


class MCDropout2d(nn.Dropout2d):
    """``nn.Dropout2d`` that can replay channel masks drawn in advance (Monte-Carlo inference).

    As a module it is exactly ``nn.Dropout2d``. After :func:`draw_dropout_masks`, each
    :meth:`next_masks` call takes the next ``B`` rows of its ``(T, C)`` mask bank, so the T
    Monte-Carlo samples get the same masks whether they run one at a time or in batches of any
    size (the residual blocks apply them, :meth:`NonBottleneck1D.merge`).
    """

    def __init__(self, p: float, channels: int):
        super().__init__(p)
        self.channels = channels
        self.masks: torch.Tensor | None = None  # (T, C) float: 0 or 1 / (1 - p)
        self.cursor = 0

    def next_masks(self, x: torch.Tensor) -> torch.Tensor | None:
        """The next ``(B, C, 1, 1)`` replayed masks for the batch ``x`` (B, C, H, W), in ``x``'s dtype
        and device; None when no masks are drawn or dropout is off (evaluation mode)."""
        if self.masks is None or not self.training:
            return None
        n = x.shape[0]
        masks = self.masks[self.cursor:self.cursor + n]
        if masks.shape[0] != n:
            raise RuntimeError(f"dropout mask bank exhausted: {self.masks.shape[0]} masks drawn, "
                               f"{self.cursor + n} samples asked for")
        self.cursor += n
        return masks.to(device=x.device, dtype=x.dtype)[:, :, None, None]


def draw_dropout_masks(model: nn.Module, n_samples: int, generator: torch.Generator | None = None):
    """Draw ``n_samples`` channel masks for every :class:`MCDropout2d` of ``model`` (in module
    order, from ``generator``); ``n_samples = 0`` clears them (plain dropout again)."""
    for module in model.modules():
        if isinstance(module, MCDropout2d):
            module.cursor = 0
            if n_samples == 0 or module.p == 0:
                module.masks = None
                continue
            keep = torch.rand(n_samples, module.channels, generator=generator) >= module.p
            module.masks = keep.float() / (1.0 - module.p)


def cast_to_bfloat16(model: nn.Module) -> nn.Module:
    """Store every conv weight and bias (and fused kernel) in bfloat16, in place, so autocast does
    not convert them again on every forward pass; batch-norm statistics stay float32. The
    down-samplers then hand bfloat16 on (:attr:`DownsamplerBlock.low_precision_stream`): a float32
    residual stream would make every block add and convert across dtypes."""
    for module in model.modules():
        if isinstance(module, DownsamplerBlock):
            module.low_precision_stream = True
        if isinstance(module, nn.BatchNorm2d):
            continue
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                module._parameters[name] = nn.Parameter(param.detach().to(torch.bfloat16),
                                                        requires_grad=False)
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.to(torch.bfloat16)
    return model


class DownsamplerBlock(nn.Module):
    """Strided 3x3 conv concatenated with 2x2 max-pool, then batch norm and ELU.

    ``low_precision_stream`` (set by :func:`cast_to_bfloat16`, inference only): the pooled half
    takes the conv's (autocast) dtype, so the block's output and the residual stream of the blocks
    after it stay in bfloat16 instead of being promoted to float32 by the concatenation.
    """

    low_precision_stream = False

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out - n_in, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(n_out, eps=BN_EPS)

    def forward(self, x):  # (B, n_in, H, W) -> (B, n_out, ceil(H/2), ceil(W/2))
        conv = self.conv(x)
        pool = self.pool(x)
        if self.low_precision_stream:
            pool = pool.to(conv.dtype)
        return _elu(self.bn(torch.cat([conv, pool], 1)))


class NonBottleneck1D(nn.Module):
    """ERFNet residual block of factorised 3x1 / 1x3 convolutions, optionally dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int):
        super().__init__()
        c, d = channels, dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.dropout = MCDropout2d(dropout, c)

    def forward(self, x, mask=None):  # (B, C, H, W) -> (B, C, H, W)
        return self.merge(self.branch(x), x, mask)

    def branch(self, x):
        """The residual branch up to its dropout (the same for every Monte-Carlo sample)."""
        out = _elu(self.conv3x1_1(x))
        out = _elu(self.bn1(self.conv1x3_1(out)))
        out = _elu(self.conv3x1_2(out))
        return self.bn2(self.conv1x3_2(out))

    def merge(self, out, x, mask=None):
        """Dropout on the branch ``out``, then ``ELU(out + x)``; may overwrite ``out``.

        ``mask`` (B, C, 1, 1): the dropout masks to apply (replayed Monte-Carlo samples); None:
        the next ones of the dropout's bank, or plain dropout without a bank."""
        if mask is None and self.dropout.p > 0:
            mask = self.dropout.next_masks(out)  # Monte-Carlo replay: fused with the skip below
            if mask is None:
                out = self.dropout(out)
        return _residual_elu(out, x, mask)


# _UPSAMPLE_TAPS[a][d, r]: weight of input offset r (-1, 0, 1) in the bilinear 2x upsampled sample
# 2k + a + d (d = -1, 0, 1, the taps of a 3x3 conv), align_corners=False, edges replicated.
_UPSAMPLE_TAPS = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],
                               [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]]],
                              dtype=torch.float64)


def fuse_upsample_conv(weight: torch.Tensor) -> torch.Tensor:
    """Transposed-conv kernel equal to a 3x3 conv applied after bilinear 2x upsampling.

    Parameters
    ----------
    weight : (O, I, 3, 3) float, the conv that follows the upsampling

    Returns
    -------
    (I, O, 6, 6) kernel for ``conv_transpose2d(pad_replicate(x, 1), kernel, stride=2, padding=4)``:
    output pixel ``2k + a`` (phase a) sees inputs ``k - 1 .. k + 1``; the composite taps of phase a
    and input offset r sit at kernel index ``a - 2 r + 2``.
    """
    taps = _UPSAMPLE_TAPS.to(weight.device)
    composite = torch.einsum("oide,adr,bes->aboirs", weight.double(), taps, taps)  # (2,2,O,I,3,3)
    # kernel index a - 2 r + 2 = 2 (2 - r') + a with r' = r + 1: flip r, then (r, a) -> one axis
    kernel = composite.flip(4, 5).permute(3, 2, 4, 0, 5, 1)  # (I, O, 3, 2, 3, 2)
    kernel = kernel.reshape(weight.shape[1], weight.shape[0], 6, 6)
    return kernel.to(weight.dtype)


def _fix_border(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Make the outer pixel ring of the fused result exact: there the 3x3 conv's zero padding lies
    outside the upsampled image, where the fused kernel saw edge-replicated values instead.

    Subtracts those values' contribution, computed in float32 from the first and last input
    rows and columns (a few small ops; the ring is 1 px wide).
    """
    w = weight.float()
    n_out, height, width = w.shape[0], out.shape[-2], out.shape[-1]
    # rows above / below the image: x's first / last row upsampled along x, corners included
    rows = F.interpolate(x[:, :, [0, -1], :].float().flatten(1, 2), scale_factor=2, mode="linear",
                         align_corners=False)  # (B, 2C, 2W): channel c of the top row at 2c
    rows = F.pad(rows, (1, 1), mode="replicate")
    row_weight = torch.stack([w[:, :, 0, :], w[:, :, 2, :]], 1)  # (O, 2, C, 3): top, bottom taps
    row_weight = row_weight.permute(1, 0, 2, 3).reshape(2 * n_out, -1, 3)
    rows = rows.view(rows.shape[0], -1, 2, rows.shape[-1]).transpose(1, 2).flatten(1, 2)  # top block, bottom block
    err_rows = F.conv1d(rows, row_weight, groups=2)  # (B, 2O, 2W)
    # columns left / right of the image (corners already counted with the rows: zero padded)
    cols = F.interpolate(x[:, :, :, [0, -1]].float().transpose(2, 3).flatten(1, 2), scale_factor=2,
                         mode="linear", align_corners=False)  # (B, 2C, 2H)
    col_weight = torch.stack([w[:, :, :, 0], w[:, :, :, 2]], 1).permute(1, 0, 2, 3).reshape(2 * n_out, -1, 3)
    cols = cols.view(cols.shape[0], -1, 2, cols.shape[-1]).transpose(1, 2).flatten(1, 2)
    err_cols = F.conv1d(cols, col_weight, padding=1, groups=2)  # (B, 2O, 2H)
    out[:, :, 0, :] -= err_rows[:, :n_out, :width].to(out.dtype)
    out[:, :, -1, :] -= err_rows[:, n_out:, :width].to(out.dtype)
    out[:, :, :, 0] -= err_cols[:, :n_out, :height].to(out.dtype)
    out[:, :, :, -1] -= err_cols[:, n_out:, :height].to(out.dtype)
    return out


def upsample_conv(x: torch.Tensor, size, conv: nn.Conv2d, fused_weight: torch.Tensor | None = None):
    """``conv(interpolate(x, size, bilinear))`` for a 3x3, padding-1 ``conv``.

    With ``fused_weight`` (from :func:`fuse_upsample_conv`) and an exact 2x size, one stride-2
    transposed convolution on the low-resolution input replaces the upsampled tensor (never
    built) and the full-resolution conv: the same FLOPs, no interpolation pass; identical result
    to float rounding, borders included. Otherwise (training, odd sizes) the plain path.
    """
    size = tuple(size)
    if fused_weight is None or size != (2 * x.shape[-2], 2 * x.shape[-1]) or x.shape[-1] < 2 \
            or x.shape[-2] < 2:
        return conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
    bias = conv.bias
    if torch.is_autocast_enabled(x.device.type):  # conv_transpose2d autocasts; the pad does not
        dtype = torch.get_autocast_dtype(x.device.type)
        x, fused_weight, bias = x.to(dtype), fused_weight.to(dtype), bias.to(dtype)
    out = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), fused_weight, bias, stride=2,
                             padding=4)
    return _fix_border(out, x, conv.weight)


class UpsamplerBlock(nn.Module):
    """Bilinear 2x upsampling, 3x3 conv, batch norm, ELU (no transposed convolution)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(n_out, eps=BN_EPS)

    def forward(self, x, size):  # (B, n_in, h, w) -> (B, n_out, *size)
        return _elu(self.bn(upsample_conv(x, size, self.conv, getattr(self, "fused_weight", None))))


class Encoder(nn.Module):
    def __init__(self, n_out_unused: int = 5):
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, ENCODER_DROPOUT_64, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, ENCODER_DROPOUT_128, d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)
        # Present in the published checkpoint (ERFNet's encoder-only head); unused here.
        self.output_conv = nn.Conv2d(128, n_out_unused, 1, bias=True)

    def forward(self, x):  # (B, 3, H, W) -> (B, 128, H/8, W/8), [full, half, quarter] sizes
        sizes = skip_sizes(*x.shape[-2:])
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return x, sizes


class Decoder(nn.Module):
    def __init__(self, n_out: int):
        super().__init__()
        self.layers = nn.ModuleList([
            UpsamplerBlock(128, 64), NonBottleneck1D(64, 0.0, 1), NonBottleneck1D(64, 0.0, 1),
            UpsamplerBlock(64, 16), NonBottleneck1D(16, 0.0, 1), NonBottleneck1D(16, 0.0, 1),
        ])
        self.output_conv = nn.Conv2d(16, n_out, 3, padding=1, bias=True)

    def forward(self, x, sizes):  # (B, 128, H/8, W/8) -> (B, n_out, H, W)
        full, half, quarter = sizes[0], sizes[1], sizes[2]
        x = self.layers[0](x, quarter)
        x = self.layers[2](self.layers[1](x))
        x = self.layers[3](x, half)
        x = self.layers[5](self.layers[4](x))
        return upsample_conv(x, full, self.output_conv, getattr(self, "fused_output_weight", None))


class BPartIS(nn.Module):
    """ERFNet encoder + decoder 0 (offset x, offset y, sigma x, sigma y) + decoder 1 (seed logit).

    ``forward`` returns the raw ``(B, 5, H, W)`` map; :func:`interpret` turns it into pixel
    embeddings, sigmas and seed probabilities.
    """

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoders = nn.ModuleList([Decoder(2 + N_SIGMA), Decoder(1)])
        self.init_output()

    def init_output(self) -> None:
        """Offsets start at zero and sigmas at a small bandwidth, as in spatial embeddings."""
        conv = self.decoders[0].output_conv
        with torch.no_grad():
            conv.weight[:2].zero_()
            conv.bias[:2].zero_()
            conv.weight[2:].zero_()
            conv.bias[2:].fill_(1.0)

    def forward(self, x):  # (B, 3, H, W) -> (B, 5, H, W)
        features, sizes = self.encoder(x)
        return torch.cat([decoder(features, sizes) for decoder in self.decoders], 1)

    def encode_head(self, x):
        """Everything before the first dropout, run once for all Monte-Carlo samples: the two
        down-samplers and the branch of the first residual block (its dropout acts on the branch).

        Returns ``head (B, 64, H/4, W/4)`` and ``branch`` (same shape) for
        :meth:`forward_from_head`, whose skip sizes are :func:`skip_sizes` of ``x``'s.
        """
        x = self.encoder.layers[0](self.encoder.initial_block(x))
        return x, self.encoder.layers[1].branch(x)

    def forward_from_head(self, head, branch, sizes, masks=None):  # (B, 64, H/4, W/4) x 2 -> (B, 5, H, W)
        """The rest of :meth:`forward` after :meth:`encode_head`; ``branch`` may be overwritten.

        ``masks``: one ``(B, C, 1, 1)`` dropout mask per encoder residual block
        (:func:`next_dropout_masks`); None: each block's own (replayed bank or plain dropout).
        """
        blocks = iter(masks if masks is not None else [])
        x = self.encoder.layers[1].merge(branch, head, next(blocks, None))
        for layer in self.encoder.layers[2:]:
            x = layer(x, next(blocks, None)) if isinstance(layer, NonBottleneck1D) else layer(x)
        return torch.cat([decoder(x, sizes) for decoder in self.decoders], 1)


def skip_sizes(height: int, width: int) -> list:
    """The decoders' target sizes for an ``height`` x ``width`` input: full, half and quarter
    (each down-sampler gives ceil(n / 2))."""
    half = (-(-height // 2), -(-width // 2))
    return [torch.Size((height, width)), torch.Size(half), torch.Size((-(-half[0] // 2), -(-half[1] // 2)))]


def next_dropout_masks(model: BPartIS, like: torch.Tensor) -> list:
    """The next ``(B, C, 1, 1)`` dropout masks of every encoder residual block for the batch
    ``like`` (B = its length; its dtype and device): replayed from the banks of
    :func:`draw_dropout_masks` where drawn and dropout is on, ones elsewhere."""
    masks = []
    for layer in model.encoder.layers:
        if isinstance(layer, NonBottleneck1D):
            mask = layer.dropout.next_masks(like) if layer.dropout.p > 0 else None
            masks.append(mask if mask is not None else torch.ones(
                like.shape[0], layer.dropout.channels, 1, 1, dtype=like.dtype, device=like.device))
    return masks


class _HeadPass(nn.Module):
    def __init__(self, model: BPartIS):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode_head(x)


class _TailPass(nn.Module):
    def __init__(self, model: BPartIS, sizes: list):
        super().__init__()
        self.model, self.sizes = model, sizes

    def forward(self, head, branch, masks: list):
        return self.model.forward_from_head(head, branch, self.sizes, masks)


class FusedGraphs:
    """The inference passes of a folded model (:func:`fold_batchnorm`) as frozen TorchScript
    traces run by PyTorch's oneDNN Graph fuser (CPU), one per input shape.

    The fuser makes each conv write its ELU, or its dropout mask, skip addition and ELU, as it
    stores its output (oneDNN post-ops), instead of a separate pass over memory for each; the
    elementwise passes cost more than the bfloat16 matrix work in the 16- and 64-channel blocks.
    Tracing a new shape takes ~2 s on 2 cores, and the first two runs of a trace are slower
    (profiling). No compiler is needed. Where tracing or running fails, :meth:`head` and
    :meth:`tail` log one warning and return None from then on: the caller runs the plain model.
    """

    MAX_GRAPHS = 8  # traces kept (a working size needs two, plus one per odd batch size)

    def __init__(self, model: BPartIS):
        self.model = model
        self.graphs: OrderedDict = OrderedDict()
        self.failed = False

    def head(self, x: torch.Tensor):
        """``(head, branch)`` of :meth:`BPartIS.encode_head` for ``x`` (B, 3, H, W), or None."""
        return self._run(("head", tuple(x.shape), x.dtype), lambda: _HeadPass(self.model), (x,))

    def tail(self, head: torch.Tensor, branch: torch.Tensor, sizes: list, masks: list):
        """:meth:`BPartIS.forward_from_head` with explicit ``masks``, or None."""
        key = ("tail", tuple(head.shape), head.dtype, tuple(tuple(s) for s in sizes))
        return self._run(key, lambda: _TailPass(self.model, sizes), (head, branch, masks))

    def _run(self, key, make, inputs):
        if self.failed:
            return None
        try:
            with _onednn_fusion():
                graph = self.graphs.get(key)
                if graph is None:
                    modes = {module: module.training for module in self.model.modules()}
                    try:  # freezing wants eval mode; the masks are inputs, so dropout's mode is moot
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # tracer warnings: one trace per shape
                            graph = torch.jit.freeze(torch.jit.trace(make().eval(), inputs, check_trace=False))
                    finally:
                        for module, training in modes.items():
                            module.training = training
                    self.graphs[key] = graph
                    while len(self.graphs) > self.MAX_GRAPHS:
                        self.graphs.popitem(last=False)
                self.graphs.move_to_end(key)
                return graph(*inputs)
        except Exception as exc:  # tracing / the fuser raise many kinds
            logging.getLogger(__name__).warning(
                "fused CPU graphs unavailable (%s: %s); running the plain model (slower)",
                type(exc).__name__, str(exc).splitlines()[0][:160] if str(exc) else "")
            self.failed = True
            self.graphs.clear()
            return None


@contextlib.contextmanager
def _onednn_fusion():
    """PyTorch's oneDNN Graph fuser on for the TorchScript graphs run inside (a process-wide
    switch, restored on exit)."""
    previous = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(previous)


def fold_batchnorm(model: BPartIS) -> BPartIS:
    """Inference copy of ``model`` with every conv -> batch-norm pair folded into the conv.

    Batch norm is frozen at inference (running statistics), so ``conv`` followed by ``bn`` is one
    affine conv; the copy gives the same outputs (to float rounding) and skips a pass over every
    activation. Down-sampler batch norms (they also normalise the pooled channels) stay. Each
    "bilinear 2x upsampling + 3x3 conv" of the decoders also gets its fused transposed-conv
    kernel (:func:`fuse_upsample_conv`, a non-persistent buffer). The original ``model`` is not
    changed; its state-dict keys are not those of the copy.
    """
    import copy

    folded = copy.deepcopy(model).eval()
    pairs = []
    for module in folded.modules():
        if isinstance(module, NonBottleneck1D):
            pairs += [(module, "conv1x3_1", "bn1"), (module, "conv1x3_2", "bn2")]
        elif isinstance(module, UpsamplerBlock):
            pairs.append((module, "conv", "bn"))
    with torch.no_grad():
        for module, conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue  # already folded
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
            setattr(module, bn_name, nn.Identity())
        for module in folded.modules():  # after folding: the fused kernels include the batch norm
            if isinstance(module, UpsamplerBlock):
                module.register_buffer("fused_weight", fuse_upsample_conv(module.conv.weight),
                                       persistent=False)
            elif isinstance(module, Decoder):
                module.register_buffer("fused_output_weight",
                                       fuse_upsample_conv(module.output_conv.weight), persistent=False)
    return folded


def usable_device(device) -> torch.device:
    """``torch.device(device)``, refused in one line when it names a GPU this torch cannot use."""
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise IdxError(f"--device {device}: not a torch device ({exc}); use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IdxError(f"--device {device}: this torch sees no CUDA GPU; use --device cpu")
    return device


def coordinate_map(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(2, H, W)`` map of (x, y) pixel coordinates in units of :data:`PIXEL_SCALE`."""
    ys = torch.arange(height, device=device, dtype=dtype) * PIXEL_SCALE
    xs = torch.arange(width, device=device, dtype=dtype) * PIXEL_SCALE
    return torch.stack([xs.view(1, -1).expand(height, width), ys.view(-1, 1).expand(height, width)])


def interpret(output: torch.Tensor):
    """Split a raw ``(B, 5, H, W)`` network output.

    Returns
    -------
    embedding : (B, 2, H, W) float, coordinate map + tanh(offsets), x then y
    sigma : (B, 2, H, W) float, raw sigma channels s (exp(10 s) = 1 / (2 sigma^2))
    seed : (B, 1, H, W) float, seed probability (sigmoid)
    """
    b, _, h, w = output.shape
    xym = coordinate_map(h, w, device=output.device, dtype=output.dtype)
    embedding = torch.tanh(output[:, 0:2]) + xym.unsqueeze(0)
    sigma = output[:, 2:2 + N_SIGMA]
    seed = torch.sigmoid(output[:, 2 + N_SIGMA:3 + N_SIGMA])
    return embedding, sigma, seed
