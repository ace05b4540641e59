import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.network import PIXEL_SCALE, BPartIS, coordinate_map, interpret

LAYOUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bpartis" / "checkpoint-layout.json"


def layout_checkpoint(seed=0) -> dict:
    """A state dict with exactly the keys, shapes and dtypes of the published seg-model.pt."""
    gen = torch.Generator().manual_seed(seed)
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state = {}
    for key, shape, dtype in json.loads(LAYOUT.read_text())["keys"]:
        if dtype == "int64":
            state[key] = torch.tensor(7, dtype=torch.int64) if not shape else torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen, dtype=dtypes[dtype]) * 0.05
    return state


def test_state_dict_matches_published_layout_exactly():
    layout = json.loads(LAYOUT.read_text())
    model_state = BPartIS().state_dict()
    assert [k for k, _, _ in layout["keys"]] == list(model_state)
    for key, shape, _ in layout["keys"]:
        assert list(model_state[key].shape) == shape, key
    assert sum(p.numel() for p in BPartIS().parameters()) == layout["parameters"]


def test_published_layout_checkpoint_loads_strict_and_runs():
    model = BPartIS()
    model.load_state_dict(layout_checkpoint(), strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 80))
    assert out.shape == (1, 5, 64, 80)
    assert torch.isfinite(out).all()


def test_odd_sizes_keep_resolution():
    model = BPartIS().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 61, 75))
    assert out.shape == (2, 5, 61, 75)


def test_head_tail_split_equals_full_forward():
    model = BPartIS().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        head, branch, sizes = model.encode_head(x)
        assert torch.allclose(model.forward_from_head(head, branch, sizes), model(x), atol=1e-5)


def test_coordinate_map_pixel_scale_is_independent_of_size():
    small, large = coordinate_map(32, 48), coordinate_map(64, 96)
    assert torch.allclose(small, large[:, :32, :48])
    assert abs(float(large[0, 0, 1] - large[0, 0, 0]) - PIXEL_SCALE) < 1e-9
    assert abs(float(large[1, 1, 0] - large[1, 0, 0]) - PIXEL_SCALE) < 1e-9


def test_initial_output_has_zero_offsets():
    model = BPartIS().eval()
    with torch.no_grad():
        embedding, sigma, seed = interpret(model(torch.rand(1, 3, 32, 32)))
    assert torch.allclose(embedding[0], coordinate_map(32, 32), atol=1e-6)
    assert torch.allclose(sigma, torch.ones_like(sigma))
    assert ((seed > 0) & (seed < 1)).all()


def layout_model_and_folded_copy():
    """A BPartIS with checkpoint-layout weights (eval mode) and its inference copy."""
    from models.network import fold_batchnorm

    torch.manual_seed(0)
    model = BPartIS()
    model.load_state_dict(layout_checkpoint(3))
    model.eval()
    return model, fold_batchnorm(model)


def test_folded_batchnorm_copy_gives_the_same_output():
    from models.network import fold_batchnorm

    model, folded = layout_model_and_folded_copy()
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoders.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.decoders.modules())
    assert torch.equal(fold_batchnorm(folded)(x), folded(x))


@pytest.mark.parametrize("height, width", [(32, 32), (9, 14), (2, 5)])
def test_fused_upsample_conv_equals_interpolate_then_conv(height, width):
    """The transposed-conv form of "bilinear 2x + 3x3 conv" matches, borders and corners included."""
    from models.network import fuse_upsample_conv, upsample_conv

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 6, height, width)
    with torch.no_grad():
        reference = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        fused = upsample_conv(x, (2 * height, 2 * width), conv, fuse_upsample_conv(conv.weight))
    assert fused.shape == reference.shape
    assert torch.allclose(fused, reference, atol=1e-5)


def test_fused_upsample_conv_falls_back_for_odd_target_sizes():
    from models.network import fuse_upsample_conv, upsample_conv

    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = upsample_conv(x, (15, 16), conv, fuse_upsample_conv(conv.weight))
        reference = conv(F.interpolate(x, size=(15, 16), mode="bilinear", align_corners=False))
    assert torch.equal(out, reference)


def test_folded_copy_uses_fused_upsampling_and_keeps_the_state_dict():
    model, folded = layout_model_and_folded_copy()
    assert all(hasattr(block, "fused_weight") for block in folded.decoders[0].layers[::3])
    assert "decoders.0.layers.0.fused_weight" not in folded.state_dict()
    x = torch.rand(1, 3, 64, 40)  # 2x sizes at every decoder stage: the fused path runs
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def _mc_maps(compile_kernels: bool):
    import numpy as np

    from models.infer import ParticleSegmenter

    torch.manual_seed(11)
    model = BPartIS()
    image = (np.random.default_rng(12).random((64, 64)) * 255).astype(np.uint8)
    seg = ParticleSegmenter(model=model, mc_samples=4, size=64, bf16=True, compile=compile_kernels)
    return seg, seg.predict_maps(image)


def test_compiled_kernels_change_only_rounding():
    """The compiled ELU / mask + skip + ELU kernels (the CLI default) against PyTorch's own, on
    a bfloat16 Monte-Carlo pass with replayed dropout masks: the same maps to bfloat16 rounding
    (a dropped mask or skip would move them by O(1))."""
    plain_seg, plain = _mc_maps(False)
    compiled_seg, compiled = _mc_maps(True)
    assert compiled_seg.compile is True and plain_seg.compile is False
    assert compiled_seg.params["compile"] is True
    for a, b in zip(plain, compiled):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 0.02
    assert float(compiled[3].max()) > 0  # the samples differ: the masks were applied


def test_compiled_kernels_leave_training_on_plain_autograd():
    from models.network import compiled_kernels

    torch.manual_seed(13)
    model = BPartIS().train()
    x = torch.rand(2, 3, 32, 32)
    with compiled_kernels(True) as active:
        torch.manual_seed(14)
        inside = model(x)
        inside.square().mean().backward()
    grad_inside = model.encoder.initial_block.conv.weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(14)
    outside = model(x)
    outside.square().mean().backward()
    assert active is True
    assert torch.equal(inside, outside)
    assert torch.equal(grad_inside, model.encoder.initial_block.conv.weight.grad)


def test_failed_compile_warns_once_and_falls_back(monkeypatch, caplog):
    import models.network as network

    monkeypatch.setattr(network, "_COMPILED", {})
    monkeypatch.setattr(network, "_COMPILE_FAILED", False)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING", logger="models.network"):
        seg, maps = _mc_maps(True)
        assert network.compile_kernels() is False
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler found" in warnings[0].getMessage()
    assert seg.compile is False and all(torch.isfinite(m).all() for m in maps)


def test_low_precision_stream_keeps_the_residual_blocks_in_bfloat16():
    """After cast_to_bfloat16 the down-samplers hand bfloat16 on, so no block adds float32 to
    bfloat16 (which cost a conversion pass per block); training models keep float32."""
    from models.network import cast_to_bfloat16, fold_batchnorm

    model = cast_to_bfloat16(fold_batchnorm(BPartIS())).to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
             for m in model.encoder.layers]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    for h in hooks:
        h.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert BPartIS().encoder.layers[0](torch.rand(1, 16, 32, 32)).dtype == torch.float32
