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
    assert params == {k: card[k] for k in ("tu", "seed_threshold", "min_instance_px", "tu_min_instance_px", "tta")
                      if k in card}
    segmenter = ParticleSegmenter(mc_samples=2)
    assert segmenter.tu == card["tu"] and segmenter.min_instance_px == card["min_instance_px"]
    assert segmenter.tta == card.get("tta", False) and segmenter.params["tta"] == segmenter.tta
    assert segmenter.params["filter_kind"] == "learned"


def test_tu_route_takes_the_minimum_size_it_was_tuned_with():
    """--tu uses the size the t_u sweep chose (the card's tu_min_instance_px, the sweep's record),
    the default learned filter its own; an explicit size wins over both."""
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    sweep = json.loads((DEFAULT_WEIGHTS.parents[2] / "docs" / "bpartis" / "sweep.json").read_text())
    assert card["tu_min_instance_px"] == sweep["tu_min_instance_px"] != card["min_instance_px"]
    by_tu = ParticleSegmenter(mc_samples=2, tu=card["tu"])
    assert by_tu.params["filter_kind"] == "mi" and by_tu.min_instance_px == card["tu_min_instance_px"]
    assert ParticleSegmenter(mc_samples=2).min_instance_px == card["min_instance_px"]
    assert ParticleSegmenter(mc_samples=2, tu=card["tu"], min_instance_px=20).min_instance_px == 20


@pytest.mark.slow
def test_shipped_weights_beat_the_classical_baseline_on_validation(emps_dir):
    from models.baselines import OtsuWatershed
    from models.data import read_split
    from models.evaluate import evaluate_segmenter

    stems = read_split(emps_dir, "val")[:12]
    ours = evaluate_segmenter(ParticleSegmenter(mc_samples=1, filter=False), emps_dir, stems, progress=False)
    baseline = evaluate_segmenter(OtsuWatershed(), emps_dir, stems, progress=False)
    assert ours["AP50"] > baseline["AP50"] and ours["mean_IoU"] > baseline["mean_IoU"]
