import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.network import PIXEL_SCALE, BPartIS, coordinate_map, interpret, skip_sizes

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
        head, branch = model.encode_head(x)
        sizes = skip_sizes(*x.shape[-2:])
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
    from models.infer import ParticleSegmenter

    torch.manual_seed(11)
    model = BPartIS()
    image = (np.random.default_rng(12).random((64, 64)) * 255).astype(np.uint8)
    seg = ParticleSegmenter(model=model, mc_samples=4, size=64, bf16=True, compile=compile_kernels)
    return seg, seg.predict_maps(image)


def test_fused_graphs_change_only_rounding():
    """The traced, oneDNN-Graph-fused passes (the CLI default) against the plain model, on a
    bfloat16 Monte-Carlo pass with replayed dropout masks: the same maps to bfloat16 rounding
    (a dropped mask or skip would move them by O(1)), and the samples differ (masks applied)."""
    plain_seg, plain = _mc_maps(False)
    fused_seg, fused = _mc_maps(True)
    assert fused_seg.graphs is not None and not fused_seg.graphs.failed and len(fused_seg.graphs.graphs) == 2
    assert plain_seg.graphs is None and fused_seg.params["compile"] is True
    for a, b in zip(plain, fused):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 0.02
    assert float(fused[3].max()) > 0  # the Monte-Carlo samples differ: the masks were applied
    assert float((fused[3] - plain[3]).abs().max()) < 0.5 * float(plain[3].max())  # not the masks of other samples


def test_fused_graphs_restore_module_modes_and_the_fuser_switch():
    """Tracing puts the model in eval mode and turns the process-wide oneDNN Graph switch on;
    both are put back, so training and other TorchScript code see nothing."""
    from models.network import FusedGraphs, fold_batchnorm

    model = fold_batchnorm(BPartIS()).train()
    graphs = FusedGraphs(model)
    with torch.no_grad():
        head, branch = graphs.head(torch.rand(2, 3, 32, 32))
    assert head.shape == (2, 64, 8, 8) and branch.shape == head.shape
    assert all(module.training for module in model.modules())
    assert torch.jit.onednn_fusion_enabled() is False


def test_failed_trace_warns_once_and_falls_back(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tracing is not supported here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with caplog.at_level("WARNING", logger="models.network"):
        seg, maps = _mc_maps(True)
        seg.predict_maps(np.zeros((64, 64), np.uint8))
    warnings = [r for r in caplog.records if "fused CPU graphs" in r.getMessage()]
    assert len(warnings) == 1 and "tracing is not supported here" in warnings[0].getMessage()
    assert seg.graphs.failed and all(torch.isfinite(m).all() for m in maps)
    assert float(maps[3].max()) > 0


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
