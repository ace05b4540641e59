"""BPartIS: Bayesian particle instance segmentation (network, loss, clustering, training, inference)."""


def __getattr__(name):
    # Lazy: ``import models`` stays light; ``models.ParticleSegmenter`` loads torch on first use.
    if name in ("ParticleSegmenter", "Segmentation", "load_weights"):
        from models import infer

        return getattr(infer, name)
    if name == "BPartIS":
        from models.network import BPartIS

        return BPartIS
    raise AttributeError(f"module 'models' has no attribute {name!r}")
