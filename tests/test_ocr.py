"""miners.ocr: tesseract started with one OpenMP thread, the environment restored after."""
import os
import shutil
import threading

import pytest
from PIL import Image, ImageDraw, ImageFont

from miners import ocr
from miners.scalebar_synth import font_path

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed")


def test_thread_limit_is_set_inside_and_restored_after(monkeypatch):
    monkeypatch.setenv("OMP_THREAD_LIMIT", "7")
    with ocr.single_threaded_tesseract():
        assert os.environ["OMP_THREAD_LIMIT"] == "1"
        with ocr.single_threaded_tesseract():  # nested
            assert os.environ["OMP_THREAD_LIMIT"] == "1"
        assert os.environ["OMP_THREAD_LIMIT"] == "1"
    assert os.environ["OMP_THREAD_LIMIT"] == "7"
    monkeypatch.delenv("OMP_THREAD_LIMIT")
    with pytest.raises(RuntimeError):
        with ocr.single_threaded_tesseract():
            raise RuntimeError("tesseract failed")
    assert "OMP_THREAD_LIMIT" not in os.environ  # unset again, also after an error


def test_overlapping_threads_leave_the_environment_as_it_was(monkeypatch):
    """Two threads whose blocks overlap: the first out must not unset it under the second, and
    the last out restores the caller's value (a left-over "1" would cap torch's threads)."""
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with ocr.single_threaded_tesseract():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with ocr.single_threaded_tesseract():
            second_in.set()
            first_out.wait(5)
            seen["inside"] = os.environ.get("OMP_THREAD_LIMIT")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["inside"] == "1"
    assert "OMP_THREAD_LIMIT" not in os.environ


@needs_tesseract
def test_image_to_data_reads_a_label_and_the_process_gets_one_thread(monkeypatch):
    import subprocess

    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    envs = []
    popen = subprocess.Popen

    def spy(*args, **kwargs):
        envs.append(dict(kwargs.get("env") or os.environ))
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    image = Image.new("L", (300, 70), 255)
    ImageDraw.Draw(image).text((10, 10), "200 nm", fill=0, font=ImageFont.truetype(font_path(), 30))
    data = ocr.image_to_data(image, config="--psm 7")
    assert " ".join(w for w in data["text"] if w.strip()) == "200 nm"
    assert envs and all(env.get("OMP_THREAD_LIMIT") == "1" for env in envs)
    assert "OMP_THREAD_LIMIT" not in os.environ  # restored
