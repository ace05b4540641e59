"""idx: turn the electron-microscopy figures of the literature into a database of particle measurements.

    >>> import idx
    >>> results = idx.extract("fig2.png")          # image, array, article file or folder
    >>> results.particles.head()                   # one row per particle
    >>> results.to_db("particles.db")
    >>> idx.Database("particles.db").particles(material="gold", max_diameter_nm=50)
"""
__version__ = "0.1.0"

__all__ = ["extract", "extract_to_db", "Database", "measure_particles", "summarise_panel"]


def __getattr__(name):
    # Lazy, so ``import idx`` and ``idx --help`` stay instant (torch loads on first use).
    if name in ("extract", "extract_to_db"):
        from idx import pipeline

        return getattr(pipeline, name)
    if name == "Database":
        from idx.db import Database

        return Database
    if name in ("measure_particles", "summarise_panel"):
        from idx import particles

        return getattr(particles, name)
    raise AttributeError(f"module 'idx' has no attribute {name!r}")
