import json

import pytest

from models.infer import DEFAULT_WEIGHTS, ParticleSegmenter, file_sha256, load_weights, tuned_params
from models.network import BPartIS


def test_shipped_weights_load_strict_and_match_their_card():
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert DEFAULT_WEIGHTS.stat().st_size < 25 * 2**20
    assert file_sha256(DEFAULT_WEIGHTS) == card["sha256"]
    BPartIS().load_state_dict(load_weights(DEFAULT_WEIGHTS), strict=True)
    params = tuned_params()
    shipped_filter = json.loads((DEFAULT_WEIGHTS.parent / card["instance_filter"]).read_text())
    assert params.pop("instance_filter").to_dict() == shipped_filter
    keys = ("tu", "seed_threshold", "min_instance_px", "tu_seed_threshold", "tu_min_instance_px", "tta",
            "zoom_below_px", "foreground_threshold", "phi_threshold", "tu_foreground_threshold", "tu_phi_threshold",
            "edge_alpha", "refine_centre")
    assert params == {k: card[k] for k in keys if k in card}
    segmenter = ParticleSegmenter(mc_samples=2)
    assert segmenter.tu == card["tu"] and segmenter.min_instance_px == card["min_instance_px"]
    assert segmenter.tta == card.get("tta", False) and segmenter.params["tta"] == segmenter.tta
    assert segmenter.params["filter_kind"] == "learned"
    assert segmenter.zoom_below_px == card.get("zoom_below_px")
    assert (segmenter.foreground_threshold, segmenter.phi_threshold) == \
        (card["foreground_threshold"], card["phi_threshold"])
    assert segmenter.edge_alpha == card["edge_alpha"] == segmenter.params["edge_alpha"]
    assert segmenter.refine_centre == card["refine_centre"] == segmenter.params["refine_centre"]
    assert not ParticleSegmenter(mc_samples=2, tu=0.02).refine_centre  # the published route


def test_export_from_the_recorded_sweep_rebuilds_the_shipped_card(tmp_path):
    """`python -m models.export` on the shipped weights and `docs/bpartis/sweep.json` gives the
    same file, every value the segmenter reads from the card (the rim-snapping alpha the filter
    was chosen with included) and the same filter file: the tuned set-up can be shipped again."""
    from pathlib import Path

    from models.export import main

    out = tmp_path / "bpartis-emps.pt"
    main([str(DEFAULT_WEIGHTS), "--sweep", str(Path(__file__).parents[1] / "docs/bpartis/sweep.json"),
          "--out", str(out)])
    shipped, exported = (json.loads(path.with_suffix(".json").read_text()) for path in (DEFAULT_WEIGHTS, out))
    assert exported["sha256"] == shipped["sha256"] == file_sha256(out)
    assert (out.parent / exported["instance_filter"]).read_bytes() == \
        (DEFAULT_WEIGHTS.parent / shipped["instance_filter"]).read_bytes()
    provenance = ("source_checkpoint", "selected_by")
    assert {k: v for k, v in exported.items() if k not in provenance} == \
        {k: v for k, v in shipped.items() if k not in provenance}
    read = tuned_params(out)
    assert read.pop("instance_filter").to_dict() == tuned_params().pop("instance_filter").to_dict()
    assert read == {k: v for k, v in tuned_params().items() if k != "instance_filter"}
    assert read["edge_alpha"] == shipped["edge_alpha"]


def test_tu_route_takes_the_clustering_it_was_tuned_with(tmp_path):
    """--tu uses the seed threshold and size the t_u sweep chose (the card's tu_* values), the
    default learned filter (and --no-filter) its own; an explicit value wins over both."""
    import shutil

    weights = tmp_path / "w.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    shutil.copy(DEFAULT_WEIGHTS.parent / card["instance_filter"], tmp_path / card["instance_filter"])
    weights.with_suffix(".json").write_text(json.dumps(
        {"tu": 0.02, "seed_threshold": 0.7, "min_instance_px": 16, "tu_seed_threshold": 0.9,
         "tu_min_instance_px": 128, "instance_filter": card["instance_filter"]}))
    by_tu = ParticleSegmenter(weights, mc_samples=2, tu=0.02)
    assert by_tu.params["filter_kind"] == "mi"
    assert (by_tu.seed_threshold, by_tu.min_instance_px) == (0.9, 128)
    default = ParticleSegmenter(weights, mc_samples=2)
    assert default.params["filter_kind"] == "learned"
    assert (default.seed_threshold, default.min_instance_px) == (0.7, 16)
    unfiltered = ParticleSegmenter(weights, mc_samples=2, filter=False)  # the same instances, unfiltered
    assert (unfiltered.seed_threshold, unfiltered.min_instance_px) == (0.7, 16)
    explicit = ParticleSegmenter(weights, mc_samples=2, tu=0.02, min_instance_px=20, seed_threshold=0.6)
    assert (explicit.seed_threshold, explicit.min_instance_px) == (0.6, 20)


@pytest.mark.slow
def test_shipped_weights_beat_the_classical_baseline_on_validation(emps_dir):
    from models.baselines import OtsuWatershed
    from models.data import read_split
    from models.evaluate import evaluate_segmenter

    stems = read_split(emps_dir, "val")[:12]
    ours = evaluate_segmenter(ParticleSegmenter(mc_samples=1, filter=False), emps_dir, stems, progress=False)
    baseline = evaluate_segmenter(OtsuWatershed(), emps_dir, stems, progress=False)
    assert ours["AP50"] > baseline["AP50"] and ours["mean_IoU"] > baseline["mean_IoU"]
