"""tesseract (through pytesseract) with one OpenMP thread: scale-bar labels, panel letters and
scanned PDF pages."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_saved: str | None = None


@contextmanager
def single_threaded_tesseract():
    """Run the tesseract processes started inside with one OpenMP thread (``OMP_THREAD_LIMIT=1``).

    On these 2 cores tesseract's OpenMP threads cost more than they give: a one-line label takes
    0.076 s instead of 0.12 s, a scanned 1700 x 2200 page 4.2 s instead of 26 s (idle threads
    spin while the others work; tesseract's FAQ advises one thread). The variable is set in
    ``os.environ`` only while the block runs (pytesseract passes ``os.environ`` to the process)
    and restored after; nesting and threads are counted, so the last one out restores it.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = os.environ.get("OMP_THREAD_LIMIT")
            os.environ["OMP_THREAD_LIMIT"] = "1"
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _saved is None:
                    os.environ.pop("OMP_THREAD_LIMIT", None)
                else:
                    os.environ["OMP_THREAD_LIMIT"] = _saved


def image_to_data(image, config: str, timeout: float = 0) -> dict:
    """``pytesseract.image_to_data(image, config=config, timeout=timeout)`` as a dict of lists,
    with single-threaded tesseract (:func:`single_threaded_tesseract`)."""
    import pytesseract

    with single_threaded_tesseract():
        return pytesseract.image_to_data(image, config=config, output_type=pytesseract.Output.DICT,
                                         timeout=timeout)
