"""The idx pipeline: source -> figures -> panels -> scale bar -> particles -> measurements.

``extract`` runs it on an image path, a numpy array, an article file (PDF, HTML, XML) or a
folder of them and returns one :class:`PanelResult` per panel; ``extract_to_db`` streams the same
results into a database, one transaction per panel, skipping panels a previous run stored.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from idx.errors import DatabaseError, IdxError, ImageError

log = logging.getLogger(__name__)

MODEL_VERSION = "bpartis-idx-1"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp"}
ARTICLE_SUFFIXES = {".pdf", ".html", ".htm", ".xml", ".nxml"}


MIN_PANEL_PX = 16  # a panel narrower than this is no micrograph to segment (a sliver, a label)


@dataclass
class FigureSource:
    """One figure to analyse: its image, caption and the article it belongs to."""

    image: np.ndarray = field(repr=False)  # (H, W) or (H, W, 3) uint8
    caption: str = ""
    figure: dict = field(default_factory=dict)  # id, label, caption, image (path/url)
    article: dict = field(default_factory=dict)  # doi, title, ..., source_path
    single: bool = False  # the user handed us this image: segment it even if it is one "other" panel


@dataclass
class PanelResult:
    """Everything idx measured on one panel.

    Attributes
    ----------
    panel : dict
        ``bbox`` [x0, y0, x1, y1] in figure pixels, ``label``, ``kind``, ``technique``, ``caption``.
    scalebar : miners.scalebar.ScaleBar
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        The panel crop.
    labels : ndarray of int32, shape (H, W) or None
        Instance map (None when the panel was not segmented: not EM).
    uncertainty : ndarray of float32, shape (H, W) or None
        Per-pixel mutual information.
    particles : pandas.DataFrame
        One row per particle (``idx.particles.measure_particles``).
    summary : dict
        Per-panel statistics (``idx.particles.summarise_panel``); ``{"count": 0}`` for a panel
        that was not segmented (not a micrograph), as the database stores it.
    """

    source: FigureSource
    panel: dict
    scalebar: object
    image: np.ndarray
    labels: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    particles: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: dict = field(default_factory=lambda: {"count": 0})

    def __repr__(self) -> str:  # the arrays would fill a screen
        height, width = self.image.shape[:2]
        scale = f"{self.nm_per_px:.4g} nm/px" if self.nm_per_px else "no scale"
        return (f"PanelResult(figure={self.source.figure.get('id')!r}, "
                f"label={self.panel.get('label')!r}, kind={self.panel.get('kind')!r}, "
                f"technique={self.panel.get('technique')!r}, {width}x{height} px, {scale}, "
                f"particles={len(self.particles)})")

    @property
    def nm_per_px(self) -> float | None:
        return self.scalebar.nm_per_px if self.scalebar.found else None

    @property
    def segmented(self) -> bool:
        return self.labels is not None

    def to_dict(self) -> dict:
        """JSON-ready summary of the panel (no arrays)."""
        summary = {k: v for k, v in self.summary.items() if k not in ("histogram", "rdf")}
        return {"figure": self.source.figure.get("id"), "panel": self.panel,
                "scalebar": self.scalebar.to_dict(), "segmented": self.segmented,
                "count": int(len(self.particles)), "summary": summary}

    def plot_overlay(self):
        """Matplotlib figure: particle contours over the panel."""
        from idx.plots import plot_overlay

        self._require_segmented()
        return plot_overlay(self.image, self.labels, title=self._title())

    def _require_segmented(self) -> None:
        if self.labels is None:
            height, width = self.image.shape[:2]
            why = (f"{width}x{height} px, under {MIN_PANEL_PX} px a side" if self.panel.get("kind") == "em"
                   else "not an EM micrograph")
            raise IdxError(f"panel {self.panel.get('label') or self.panel['bbox']} was not "
                           f"segmented ({why})")

    def plot_histogram(self, bins: int = 20):
        """Matplotlib figure: size histogram of the equivalent diameters (nm, else px)."""
        from idx.plots import plot_size_histogram

        self._require_segmented()
        unit = "nm" if self.nm_per_px else "px"
        column = "diameter_nm" if unit == "nm" else "diameter_px"
        table = self.particles
        if "touches_border" in table:
            table = table[~table["touches_border"].astype(bool)]
        return plot_size_histogram(table[column].to_numpy() if len(table) else np.zeros(0),
                                   unit=unit, bins=bins, title=self._title())

    def plot_rdf(self):
        """Matplotlib figure: radial distribution function g(r) of the particle centroids."""
        from idx.plots import plot_rdf

        self._require_segmented()
        rdf = self.summary.get("rdf")
        if not rdf:
            raise IdxError(f"no g(r) for this panel: {self.summary.get('rdf_reason', 'not computed')}")
        return plot_rdf(rdf["r"], rdf["g"], rdf["unit"], title=self._title())

    def _title(self) -> str:
        name = self.source.figure.get("id") or "figure"
        return f"{name} {self.panel.get('label') or ''}".strip()


class Extraction(list):
    """The :class:`PanelResult` list of one ``extract`` call, with a table view and ``to_db``."""

    def __init__(self, results, run: dict):
        super().__init__(results)
        self.run = run

    @property
    def particles(self) -> pd.DataFrame:
        """All particles of all panels, with figure and panel columns."""
        from idx.particles import COLUMNS

        frames = [pd.DataFrame(columns=["figure", "panel", "panel_label", *COLUMNS])]
        for index, result in enumerate(self):
            if len(result.particles):
                frame = result.particles.copy()
                frame.insert(0, "panel", index)
                frame.insert(1, "panel_label", result.panel.get("label"))
                frame.insert(0, "figure", result.source.figure.get("id"))
                frames.append(frame)
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames[1:], ignore_index=True)

    def to_db(self, path, panel_dir=None) -> list[str]:
        """Store every panel in the database at ``path``; returns the ids of the panels stored.

        As ``idx extract --db``: re-runs upsert; a micrograph file whose pixels this run stored
        already (a copy, a moved or renamed file) is not stored twice, and a file replaced since
        it was stored loses its old panels.
        """
        from idx.db import Database

        with Database(path) as db:
            run_id = db.start_run(**self.run)
            folder = Path(panel_dir) if panel_dir else default_panel_dir(path)
            ids, placed = [], {}
            try:
                for result in self:
                    key = id(result.source)  # the panels of one figure share its FigureSource
                    if key not in placed:
                        placed[key] = place_figure(db, run_id, result.source)[0]
                    if placed[key] is not None:
                        ids.append(store_panel(db, run_id, result, folder, figure_id=placed[key]))
            finally:
                db.drop_run_if_empty(run_id)
            return ids


def default_panel_dir(db_path) -> Path:
    """Folder beside the database where panel crops are kept (for overlays and re-measuring)."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + "-panels")


# ---------------------------------------------------------------------------------- sources


def iter_sources(source, caption: str | None = None, figure_dir=None,
                 failures: list | None = None) -> Iterator[FigureSource]:
    """Figures found in ``source``: an array, an image file, an article file, a folder, or a list
    of these.

    In a folder, a file that cannot be read is logged (a warning naming it) and skipped; with
    ``failures``, a ``{"path", "error"}`` dict is appended to it as well.

    Raises
    ------
    IdxError
        For a missing path or a file that is neither an image nor an article.
    """
    if isinstance(source, np.ndarray):
        yield FigureSource(source, caption or "", {"id": "array"}, {}, single=True)
        return
    if isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike, np.ndarray)) for s in source):
        for item in source:  # several files, folders or arrays
            yield from iter_sources(item, caption, figure_dir, failures)
        return
    if not isinstance(source, (str, os.PathLike)):
        raise IdxError(f"cannot read a {type(source).__name__} as a source; pass a path (image, article "
                       "or folder), a numpy array, or a list of these")
    path = Path(source)
    if not path.exists():
        raise IdxError(f"{path}: no such file or folder; check the path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        kinds = {file: sniff(file) for file in files}
        # articles first: an image an article of the folder shows ("Save page as" keeps them
        # beside it) is that article's figure, with its caption and DOI, not a figure of its own
        shown = set()
        for file in sorted(files, key=lambda f: kinds[f] != "article"):
            if kinds[file] is None:
                log.debug("skipping %s: neither an image nor an article", file)
                continue
            if kinds[file] == "image" and file.resolve() in shown:
                log.debug("skipping %s: a figure of an article in %s", file, path)
                continue
            try:
                for figure in iter_sources(file, caption, figure_dir):
                    if figure.figure.get("image"):
                        shown.add(Path(figure.figure["image"]).resolve())
                    yield figure
            except IdxError as exc:
                message = str(exc) if str(file) in str(exc) else f"{file}: {exc}"
                log.warning("skipping %s", message)
                if failures is not None:
                    failures.append({"path": str(file), "error": message})
        return
    kind = sniff(path)
    if kind == "image":
        from miners.images import load_image

        yield FigureSource(load_image(path), caption or "", {"id": path.stem, "image": str(path.resolve())},
                           {"source_path": str(path.resolve()), "title": path.stem}, single=True)
    elif kind == "article":
        yield from _article_figures(path, figure_dir)
    else:
        raise IdxError(f"{path}: neither an image nor an article (PDF, HTML, XML); "
                       "pass a micrograph, a figure, an article file or a folder")


def sniff(path: Path) -> str | None:
    """'image', 'article' or None, from the first bytes of the file (not its name)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "image" if path.suffix.lower() in IMAGE_SUFFIXES else (
            "article" if path.suffix.lower() in ARTICLE_SUFFIXES else None)
    signatures = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF8", b"BM", b"RIFF")
    if head.startswith(signatures):
        return "image"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF") or stripped.startswith((b"<", b"<?xml", b"<!doctype")):
        return "article"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"  # let the image loader give the precise error
    if path.suffix.lower() in ARTICLE_SUFFIXES:
        return "article"
    return None


def _article_figures(path: Path, figure_dir=None) -> Iterator[FigureSource]:
    from miners.articles import read
    from miners.images import load_image

    # an HTML page on disk: its relative image links ("Save page as": paper_files/fig1.png) are
    # files beside it, whatever its canonical URL says
    local_base = path.resolve().parent.as_uri() + "/" if _is_html(path) else None
    article = read(path, base_url=local_base, figure_dir=figure_dir or _figure_cache(path))
    meta = article.to_dict()
    meta.pop("figures", None)
    meta["source_path"] = str(path.resolve())
    missing = []  # said once for the article, not once per figure
    for figure in article.figures:
        record = {"id": figure.id, "label": figure.label, "caption": figure.caption,
                  "image": figure.image}
        image_path = figure.image
        if image_path and str(image_path).startswith("file:"):
            image_path = Path(url2pathname(urlsplit(str(image_path)).path))
            record["image"] = str(image_path)
        if not image_path or not Path(str(image_path)).is_file():
            # a link to the publisher ("https://...", a site path "/images/fig2.gif") or a missing
            # file: the image saved next to the HTML/XML ("Save page as") under the same name
            local = path.parent / Path(urlsplit(str(image_path or "")).path).name
            if image_path and local.is_file():
                image_path = local.resolve()
                record["image"] = str(image_path)
                if str(figure.image).startswith(("http://", "https://")):
                    record["image_url"] = figure.image
            else:
                missing.append(figure.label or figure.id)
                log.debug("%s %s: %s", path.name, figure.id,
                          f"image {image_path} is not on disk" if image_path else "no image link")
                continue
        try:
            image = load_image(image_path)
        except ImageError as exc:
            log.warning("%s %s: %s", path.name, figure.id, exc)
            continue
        yield FigureSource(image, figure.caption or "", record, meta)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        log.warning("%s: %d of %d figures have no image on disk (%s); keep the figure images beside "
                    "the article file, or fetch the article with `idx crawl`", path.name, len(missing),
                    len(article.figures), shown)


def _is_html(path: Path) -> bool:
    """Whether the article reader reads ``path`` as HTML (its own test on the first bytes)."""
    from miners.articles import detect_format

    with open(path, "rb") as fh:
        head = fh.read(65536)
    try:
        return detect_format(head) == "html"
    except IdxError:
        return False  # the reader itself will say what is wrong with it


def _figure_cache(path: Path) -> Path:
    return path.parent / f".{path.stem}-figures"


def iter_db_figures(db, failures: list | None = None) -> Iterator[FigureSource]:
    """Figures stored in a database by ``idx crawl`` whose image file is on disk (the others are
    logged and, with ``failures``, appended to it as ``{"path", "error"}``)."""
    from miners.images import load_image

    rows = db.conn.execute(
        "SELECT f.id, f.figure_key, f.label, f.caption, f.image_path, f.image_url, a.doi, a.title, "
        "a.journal, a.year, a.source_path, a.url, a.key FROM figures f "
        "JOIN articles a ON a.id = f.article_id WHERE f.image_path IS NOT NULL").fetchall()
    for (fid, key, label, caption, image_path, image_url, doi, title, journal, year, spath, url,
         akey) in rows:
        try:
            image = load_image(image_path)
        except ImageError as exc:
            log.warning("figure %s: %s", key, exc)
            if failures is not None:
                failures.append({"path": image_path, "error": f"figure {key}: {exc}"})
            continue
        yield FigureSource(image, caption or "",
                           {"id": key, "label": label, "caption": caption, "image": image_path,
                            "image_url": image_url},
                           {"doi": doi, "title": title, "journal": journal, "year": year,
                            "source_path": spath, "url": url, "key": akey})


# ---------------------------------------------------------------------------------- panels


class Extractor:
    """Runs the per-figure stages with one segmenter (loaded once)."""

    def __init__(self, segmenter=None, weights=None, device="cpu", mc_samples=30, tu=None,
                 filter=True, split=True, read_labels=True, tta=None, min_instance_px=None, compile=False,
                 zoom=None, edges=None, smooth=None):
        if segmenter is None:
            from models.infer import ParticleSegmenter

            segmenter = ParticleSegmenter(weights=weights, device=device, mc_samples=mc_samples,
                                          tu=tu, filter=filter, tta=tta, min_instance_px=min_instance_px,
                                          compile=compile, zoom=zoom, edges=edges, smooth=smooth)
        self.segmenter = segmenter
        self.split, self.read_labels = split, read_labels

    @property
    def run(self) -> dict:
        params = dict(getattr(self.segmenter, "params", {}))
        params.pop("compile", None)  # how fast, not what: fused and plain runs are one run
        params.update({"split": self.split, "pipeline": MODEL_VERSION})
        return {"model_version": MODEL_VERSION,
                "weights_sha256": getattr(self.segmenter, "weights_sha256", None) or "in-memory",
                "params": params}

    def panels_of(self, source: FigureSource) -> list[dict]:
        """Panels of a figure as dicts (bbox, label, kind, em_score) with caption details."""
        from miners.captions import describe_panels, split_caption
        from miners.panels import split_panels

        height, width = source.image.shape[:2]
        if self.split:
            panels = [p.to_dict() for p in split_panels(source.image, read_labels=self.read_labels)]
        else:
            panels = []
        if not panels:
            panels = [{"bbox": [0, 0, width, height], "label": None, "kind": "other", "em_score": 0.0}]
        if source.single and len(panels) == 1:
            panels[0]["kind"] = "em"  # the user asked for this micrograph
        caption = source.caption or ""
        if caption:
            assign_caption_labels(panels, [k for k in split_caption(caption) if k])
        described = describe_panels(caption, [p["label"] for p in panels]) if caption else {}
        shared = split_caption(caption).get(None) if caption else None
        for panel in panels:
            info = described.get(panel["label"]) if panel["label"] else None
            if info is None and shared is not None:
                technique = shared.techniques[0] if shared.techniques else None
                info = {"text": "", "technique": technique,
                        "scale": list(shared.scale) if shared.scale else None}
            info = info or {}
            panel["caption"] = info.get("text") or None
            panel["technique"] = info.get("technique")
            panel["caption_scale"] = info.get("scale")
        return panels

    def process(self, source: FigureSource, panel: dict) -> PanelResult:
        """Scale bar, segmentation and measurements of one panel."""
        from idx.particles import measure_particles, summarise_panel
        from miners.images import to_gray
        from miners.scalebar import read_scalebar

        x0, y0, x1, y1 = panel["bbox"]
        crop = np.ascontiguousarray(source.image[y0:y1, x0:x1])
        scale = panel.get("caption_scale")
        scalebar = read_scalebar(crop, caption_scale=tuple(scale) if scale else None)
        if scale and scalebar.found and scalebar.source == "image":
            _check_against_caption(source, panel, scalebar, tuple(scale))
        result = PanelResult(source, panel, scalebar, crop)
        if panel["kind"] != "em":
            return result
        if min(crop.shape[:2]) < MIN_PANEL_PX:
            log.warning("%s panel %s: %dx%d px, too small to segment (under %d px a side); not measured",
                        source.figure.get("id") or "figure", panel.get("label") or panel["bbox"],
                        crop.shape[1], crop.shape[0], MIN_PANEL_PX)
            return result
        segmentation = self.segmenter.segment(crop, exclude_mask=scalebar.mask)
        result.labels, result.uncertainty = segmentation.labels, segmentation.uncertainty
        nm_per_px = result.nm_per_px
        result.particles = measure_particles(segmentation.labels, nm_per_px,
                                             uncertainty=segmentation.uncertainty,
                                             intensity=to_gray(crop))
        result.summary = summarise_panel(result.particles, segmentation.labels.shape)
        result.summary["scale_found"] = bool(scalebar.found)
        return result


def _check_against_caption(source: FigureSource, panel: dict, scalebar, stated: tuple) -> None:
    """Warn when the bar's label and the caption's stated scale for this panel disagree (the
    bar's reading is kept: the caption's statement may be about another bar, an inset's)."""
    from miners.scalebar import to_nm

    try:
        said = to_nm(*stated)
    except (TypeError, ValueError):
        return
    read = to_nm(scalebar.value, scalebar.unit)
    if abs(read - said) > 0.02 * said:
        where = source.figure.get("image") or source.figure.get("id") or "figure"
        log.warning("%s panel %s: the scale bar reads %g %s but the caption states %g %s; the bar's "
                    "reading is kept (%.4g nm/px): check the panel", where, panel.get("label") or "?",
                    scalebar.value, scalebar.unit, stated[0], stated[1], scalebar.nm_per_px)


def assign_caption_labels(panels: list[dict], caption_labels: list[str]) -> None:
    """Fill unread panel labels from the caption when the two agree.

    When the caption names exactly as many labels as there are panels and every label read from
    the figure equals the caption's label at the same reading-order position, the unread ones get
    the caption's label (in place).
    """
    if not caption_labels or len(caption_labels) != len(panels):
        return
    read = [p["label"] for p in panels]
    if not any(read):
        return
    if all(r is None or r.lower() == c.lower() for r, c in zip(read, caption_labels)):
        for panel, label in zip(panels, caption_labels):
            if panel["label"] is None:
                panel["label"] = label
                panel["label_source"] = "caption"


def extract(source, *, segmenter=None, weights=None, device="cpu", mc_samples=30, tu=None,
            filter=True, caption=None, split=True, progress=True, figure_dir=None,
            tta=None, min_instance_px=None, compile=False, zoom=None, edges=None, smooth=None) -> Extraction:
    """Find, segment and measure the particles of the EM panels in ``source``.

    Parameters
    ----------
    source : str, Path, ndarray or list of these
        A micrograph or figure (image file or array), an article (PDF, publisher HTML, JATS /
        Elsevier / Springer XML), a folder of them, or a list of any of these.
    segmenter : models.ParticleSegmenter, optional
        Reuse a loaded model; otherwise one is made from ``weights``, ``device``, ``mc_samples``,
        ``tu``, ``filter``, ``tta``, ``min_instance_px`` (the smallest particle kept, px of the
        512 x 512 working image; None: as the weights' card says) and ``compile`` (fused CPU
        graphs, ~1.4 s less per panel after a ~2 s trace; see ``ParticleSegmenter``) and ``zoom``
        (1, 2, or None: 2x where a quick first pass finds small particles, as the card says) and
        ``edges`` (False keeps the network's masks; None snaps each particle's rim to the image's
        edge as the card says, ``edge_alpha``) and ``smooth`` (a Gaussian sigma, px of the working
        image, for the network's input: finely textured particles; None: off).
    caption : str, optional
        Caption of an image or array source (gives panel techniques and stated scales).
    split : bool
        Split figures into panels; False treats each image as one panel.
    figure_dir : str or Path, optional
        Where the figures cut from a PDF go; default: a hidden ``.NAME-figures/`` beside the PDF
        (hidden, so that extracting the folder again does not take them for micrographs of their
        own). ``idx article`` writes ``NAME_figures/`` there and ``extract_to_db`` (``idx extract
        --db``) ``NAME-figures/`` beside the database.

    Returns
    -------
    Extraction
        A list of :class:`PanelResult` (one per panel, EM or not) with ``.particles`` (all
        particles as one DataFrame) and ``.to_db(path)``.
    """
    extractor = Extractor(segmenter, weights, device, mc_samples, tu, filter, split, tta=tta,
                          min_instance_px=min_instance_px, compile=compile, zoom=zoom, edges=edges,
                          smooth=smooth)
    results = []
    with logging_redirect_tqdm(), tqdm(desc="panels", unit="panel", disable=not progress) as bar:
        for figure in iter_sources(source, caption, figure_dir):
            for panel in extractor.panels_of(figure):
                results.append(extractor.process(figure, panel))
                bar.update()
    return Extraction(results, extractor.run)


def extract_to_db(source, db_path, *, segmenter=None, weights=None, device="cpu", mc_samples=30,
                  tu=None, filter=True, caption=None, split=True, progress=True,
                  figure_dir=None, tta=None, min_instance_px=None, compile=False, zoom=None, edges=None,
                  smooth=None) -> dict:
    """Run the pipeline on ``source`` (or, if None, on the figures crawled into the database) and
    store each panel as soon as it is measured, in its own transaction.

    Panels this run (same model, weights and parameters) already stored are skipped, so an
    interrupted extraction resumes where it stopped and a re-run adds nothing; a stored panel
    whose caption details (label, technique, sub-caption) now read differently, e.g. a new
    ``caption``, is measured and stored again in place (its stated scale may differ). Figures
    cut from PDFs are written to ``figure_dir`` (default: ``NAME-figures/`` beside the database
    ``NAME.db``, content-named PNGs; panel crops go to ``NAME-panels/``), so the input's folder
    may be read-only.

    Returns
    -------
    dict
        ``run_id``, ``figures``, ``panels`` (stored now, ``updated`` of them replacing a stored
        panel), ``skipped`` (already stored), ``em_panels`` (``unscaled`` of them without a scale:
        sizes in px), ``particles``, ``failed`` (files of
        a folder, or image files of crawled figures, that could not be read) and ``failures``
        (``{"path", "error"}`` of each).

    Raises
    ------
    IdxError
        Without ``source``, when ``db_path`` does not exist (there are no crawled figures).
    """
    from idx.db import Database

    if figure_dir is None:  # figures cut from PDFs: beside the database, not the input
        figure_dir = Path(db_path).with_name(Path(db_path).stem + "-figures")
    if source is None and not Path(db_path).exists():
        raise IdxError(f"{db_path}: no such database, so no crawled figures to extract; pass a "
                       "SOURCE (image, article or folder), or run `idx crawl --db` first")
    extractor = Extractor(segmenter, weights, device, mc_samples, tu, filter, split, tta=tta,
                          min_instance_px=min_instance_px, compile=compile, zoom=zoom, edges=edges,
                          smooth=smooth)
    counts = {"figures": 0, "panels": 0, "updated": 0, "skipped": 0, "em_panels": 0, "unscaled": 0,
              "particles": 0}
    failures = []
    panel_dir = default_panel_dir(db_path)
    # warnings go above the progress bar, each on its line (they were glued to the bar's)
    with Database(db_path) as db, logging_redirect_tqdm(), \
            tqdm(desc="panels", unit="panel", disable=not progress) as bar:
        run_id = db.start_run(**extractor.run)
        try:
            _extract_figures(db, run_id, extractor, iter_db_figures(db, failures=failures) if source is None
                             else iter_sources(source, caption, figure_dir, failures=failures),
                             panel_dir, counts, bar)
        finally:  # an extraction that stored nothing (a bad file, an interruption) leaves no run
            db.drop_run_if_empty(run_id)
    return {"run_id": run_id, **counts, "failed": len(failures), "failures": failures}


def _extract_figures(db, run_id: str, extractor: Extractor, figures, panel_dir: Path, counts: dict, bar) -> None:
    """The loop of :func:`extract_to_db`: each figure's panels measured and stored, ``counts``
    kept up to date."""
    for figure in figures:
        counts["figures"] += 1
        figure_id, skipped = place_figure(db, run_id, figure)
        if figure_id is None:
            counts["skipped"] += skipped
            continue
        for panel in extractor.panels_of(figure):
            bar.update()
            stored = db.stored_panel(run_id, figure_id, panel["bbox"])
            if stored is not None and all((v or None) == (panel.get(k) or None) for k, v in stored.items()):
                counts["skipped"] += 1
                continue
            result = extractor.process(figure, panel)
            try:
                store_panel(db, run_id, result, panel_dir, figure_id=figure_id)
            except DatabaseError as exc:  # "database or disk is full": say which figure was being stored
                where = figure.figure.get("image") or figure.article.get("source_path") or figure.figure.get("id")
                raise DatabaseError(f"{where} panel {panel.get('label') or '?'}: {exc}") from None
            counts["panels"] += 1
            counts["updated"] += int(stored is not None)
            counts["em_panels"] += int(result.segmented)
            counts["unscaled"] += int(result.segmented and not result.nm_per_px)
            counts["particles"] += len(result.particles)
            bar.set_postfix(particles=counts["particles"])


def place_figure(db, run_id: str, figure: FigureSource) -> tuple[str | None, int]:
    """The stored figure ``figure``'s panels go under, as ``(figure_id, 0)``; ``(None, n)`` when
    this run stored these pixels already (a moved, renamed or copied micrograph file: its ``n``
    panels stand). A micrograph file replaced since it was stored loses its old panels; a file
    stored alone and now met as an article's figure becomes that figure."""
    digest = image_digest(figure.image)
    same = db.figure_with_image(digest, run_id)  # these pixels, stored by this run already
    figure_id = None
    if figure.single and figure.figure.get("image"):  # a micrograph file, not an article's figure
        path = figure.figure["image"]
        for stale in db.stale_figures_at(path, digest):  # the file was replaced since
            log.warning("%s: the image changed since it was stored; its earlier panels removed", path)
            db.drop_figure(stale)
        if same is not None:
            elsewhere = same["image_path"] != path  # stored from another path
            if elsewhere and same["standalone"] and not Path(same["image_path"]).exists():
                db.set_figure_image_path(same["id"], path)  # the file was moved here
            if not same["standalone"] or elsewhere and not figure.caption:
                # an article's figure stays the one; a moved, renamed or copied file is done
                log.info("%s: the same image as %s, already stored; skipped", path, same["image_path"])
                return None, same["panels"]
            # this file's figure (also when stored before a move), or a copy given a caption now
            figure_id = same["id"]
            if figure.caption:
                record = _figure_record(figure)
                db.set_figure_caption(figure_id, record["caption"], record.get("shared_caption_words"))
    elif same is not None and same["standalone"]:
        # stored before as a file of its own: the article's figure (caption, DOI) replaces it
        log.info("%s: stored before as a micrograph of its own; now as a figure of its article",
                 same["image_path"])
        db.drop_figure(same["id"])
    if figure_id is None:
        figure_id = db.add_figure(db.add_article(_article_record(figure)),
                                  _figure_record(figure) | {"image_sha256": digest})
    return figure_id, 0


def image_digest(image: np.ndarray) -> str:
    """sha256 hex of an image array's pixels and shape (stable ids and file names)."""
    array = np.ascontiguousarray(image)
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()


def _article_record(figure: FigureSource) -> dict:
    article = dict(figure.article)
    if not any(article.get(k) for k in ("doi", "key", "source_path", "url")):
        article["source_path"] = f"array:{image_digest(figure.image)[:16]}"
        article.setdefault("title", "numpy array")
    return article


def _figure_record(figure: FigureSource) -> dict:
    from idx.db import caption_words
    from miners.captions import split_caption

    record = {k: v for k, v in figure.figure.items() if v is not None}
    record.setdefault("caption", figure.caption or None)
    if record.get("caption"):  # the words no panel label owns (idx query --material)
        shared = split_caption(record["caption"]).get(None)
        record["shared_caption_words"] = caption_words(shared.text if shared else "")
    if record.get("id") == "array":
        record["id"] = f"array-{image_digest(figure.image)[:16]}"
    return record


def store_panel(db, run_id: str, result: PanelResult, panel_dir: Path, figure_id: str) -> str:
    """Write a panel crop PNG (named by content hash) and the panel's rows under ``figure_id``
    (:func:`place_figure`); returns the panel id."""
    from PIL import Image

    from idx.particles import measure_particles

    panel_dir = Path(panel_dir)
    panel_dir.mkdir(parents=True, exist_ok=True)
    crop = np.ascontiguousarray(result.image)
    digest = image_digest(crop)
    image_path = panel_dir / f"{digest[:32]}.png"
    if not image_path.exists():
        tmp = image_path.with_suffix(".tmp")
        Image.fromarray(crop).save(tmp, format="PNG")
        os.replace(tmp, image_path)
    sb = result.scalebar
    panel = {**result.panel, "nm_per_px": result.nm_per_px,
             "scale_source": sb.source if sb.found else None,
             "scale_text": (sb.text or (f"{sb.value:g} {sb.unit}" if sb.found else None)),
             "image_path": str(image_path.resolve()), "image_sha256": digest}
    panel.pop("caption_scale", None)
    labels = result.labels if result.labels is not None else np.zeros(crop.shape[:2], np.int32)
    particles = result.particles if len(result.particles) else measure_particles(labels)
    return db.add_panel(run_id, figure_id, panel, particles, labels, result.uncertainty,
                        result.summary)
