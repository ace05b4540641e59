"""idx: turn the electron-microscopy figures of the literature into a database of particle measurements."""
__version__ = "0.1.0"
