"""Pool two T = 30 validation map caches (an output ensemble of two networks, equal weights) and
score the pool with `models.tune.compare_step` on the shipped card (twenty-second session; kept as
the record of that experiment, see the model card, Stage 2).

    python docs/bpartis/pool_caches.py CACHE_A CACHE_B OUT_FOLDER

Zoom decisions come from CACHE_A's `typical_area.json` (its network's T = 1 pass).
"""
import json, shutil, sys, logging
from pathlib import Path
import numpy as np
import torch
from models.data import read_split
from models.tune import MapCache, compare_step
from models.infer import ParticleSegmenter, EPS, binary_entropy

logging.basicConfig(level=logging.INFO)
A, B, OUT = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
data = "../shared/data/emps"
stems = read_split(data, "val")

def H(p):
    return binary_entropy(torch.from_numpy(np.clip(p, EPS, 1 - EPS))).numpy()

def pool(pa, pb, out):
    a, b = np.load(pa), np.load(pb)
    seed = (a["seed"] + b["seed"]) / 2
    mean_entropy = ((H(a["seed"]) - a["mi"]) + (H(b["seed"]) - b["mi"])) / 2
    mi = np.clip(H(seed) - mean_entropy, 0, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, emb=((a["emb"] + b["emb"]) / 2).astype(np.float32),
                        sigma=((a["sigma"] + b["sigma"]) / 2).astype(np.float32),
                        seed=seed.astype(np.float32), mi=mi.astype(np.float32))

OUT.mkdir(parents=True, exist_ok=True)
for sub in ("", "zoom2"):
    for p in sorted((A / sub).glob("*.npz")):
        if p.stem in stems and (B / sub / p.name).exists() and not (OUT / sub / p.name).exists():
            pool(p, B / sub / p.name, OUT / sub / p.name)
shutil.copy(A / "typical_area.json", OUT / "typical_area.json")
card = json.loads(Path("models/weights/bpartis-emps.json").read_text())
seg = ParticleSegmenter(mc_samples=30, filter=False, tta=True)
cache = MapCache(seg, "pooled " + A.name + " + " + B.name, OUT)
result = compare_step(cache, data, stems, card)
print(json.dumps(result, indent=1))
(OUT.parent / (OUT.name + ".json")).write_text(json.dumps(result, indent=1))
