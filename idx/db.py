"""The particle database: articles -> figures -> panels -> particles, per model run (SQLite).

Built on sqlite-utils. Tables:

``runs``
    One row per (model version, weights sha256, parameters); a change of any makes a new run.
``articles``, ``figures``
    Bibliographic data and figure captions (full-text search on titles and captions).
``panels``
    One row per (figure, panel bbox, run): scale, technique, caption, per-panel statistics
    (``summarise_panel``) and the full summary as JSON.
``panel_maps``
    The panel's instance map and uncertainty map, ``np.savez_compressed`` bytes, so measurements
    can be recomputed (``load_panel_maps``).
``particles``
    One row per particle (``idx.particles.measure_particles`` columns).
``article_keys``
    Every crawl key an article was stored under (``"pmcid:PMC3460867"``, ``"doi:10.1/x"``...) ->
    its article id: several keys (two sources, a PMCID and the DOI) can name one article row, and
    ``has_article`` finds each of them. Created, and filled from ``articles.key``, when a database
    written by an older idx is opened for writing; read-only opens of such a file fall back to
    ``articles.key`` (the last key stored per article).
``crawl_failures``
    Articles the crawler could not fetch, with the reason, attempts and the DOI the source listed
    for the key (``doi``; for a ``doi:`` key its own DOI; NULL if unknown). A row is deleted when
    its key, or any key of the same article or DOI, is stored, and a failure of a key whose DOI is
    already stored is not recorded. Opening an older database for writing adds the ``doi`` column
    (filled for ``doi:`` keys) and deletes the rows of articles already stored.
``crawl_figure_failures``
    Figure images of stored articles the crawler could not download: ``(key, figure_key)``,
    ``url``, ``kind`` (``"HTTP 404"``, ``"timeout"``...), ``reason``, ``permanent``,
    ``attempts``. A row is deleted when its figure is stored. Created when a database written by
    an older idx is opened for writing; read-only opens of such a file see no figure failures.

Ids are stable hashes (article: DOI, else crawl key, else source; figure: article + figure id;
panel: figure + bbox + run), written with ``upsert_all``, so re-running an extraction never
duplicates rows. Each panel is written in one transaction: an interrupted extraction leaves no
half-written panel. File databases use WAL mode and a busy timeout; every SQLite failure a user can
cause (not a database, locked, read-only, bad SQL) becomes a one-line ``DatabaseError``.

Writing API (used by ``idx.pipeline`` and ``miners.crawl``)::

    db = Database("particles.db")
    run_id = db.start_run("bpartis-1.0", weights_sha256, {"mc_samples": 10})
    article_id = db.add_article({"doi": "10.1/x", "title": "...", "year": 2020})
    figure_id = db.add_figure(article_id, {"id": "fig2", "label": "Figure 2", "caption": "..."})
    panel_id = db.add_panel(run_id, figure_id, panel, particles, labels, uncertainty, summary)

    # crawler protocol
    db.has_article(key); db.add_article(key, article, source); db.record_failure(key, url, why)
    db.record_figure_failure(key, failure); db.list_figure_failures(key)
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import math
import os
import re
import sqlite3
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from idx.errors import DatabaseError
from idx.particles import COLUMNS as PARTICLE_COLUMNS
from idx.particles import SHAPE_CLASSES
from miners.crawl import figure_key as _figure_key

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0  # seconds a write waits for another process's lock
ID_LENGTH = 16  # hex characters of the sha256 used as stable ids
READ_ONLY_KEYWORDS = {"SELECT", "WITH", "EXPLAIN", "VALUES"}
WRITE_KEYWORDS = {"INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "CREATE", "DROP", "ALTER",
                  "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX", "ANALYZE", "BEGIN", "COMMIT",
                  "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
SUMMARY_COLUMNS = tuple(
    f"diameter_{stat}_{unit}"
    for unit in ("nm", "px")
    for stat in ("mean", "median", "std", "geomean", "geostd")
)
TABLES = ("runs", "articles", "figures", "panels", "panel_maps", "particles", "article_keys",
          "crawl_failures", "crawl_figure_failures")


def make_id(*parts) -> str:
    """Stable id: the first ``ID_LENGTH`` hex characters of sha256 of ``parts`` as JSON."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]


def bbox_to_dict(bbox) -> dict:
    """``[x0, y0, x1, y1]`` (px, x1/y1 exclusive) -> ``bbox_x0 ... bbox_y1`` columns."""
    values = [int(v) for v in bbox]
    if len(values) != 4 or values[2] <= values[0] or values[3] <= values[1]:
        raise DatabaseError(f"panel bbox must be [x0, y0, x1, y1] with x1 > x0, y1 > y0; got {bbox}")
    return dict(zip(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"), values))


UNCERTAINTY_LEVELS = 255  # uncertainty maps are stored quantised to uint8 over [0, max]


def encode_maps(labels: np.ndarray, uncertainty: np.ndarray | None) -> tuple[bytes, bytes | None]:
    """Compress an instance map and an uncertainty map to ``np.savez_compressed`` bytes.

    Parameters
    ----------
    labels : ndarray of int, shape (M, N)
        Stored exactly, as int32.
    uncertainty : ndarray of float, shape (M, N), optional
        Stored as uint8 levels of ``[0, max]`` plus ``max`` (float64): the error of a pixel is at
        most ``max / 510`` (sizes: docs/bench/measurements.md).

    Returns
    -------
    tuple of bytes
        ``(labels_npz, uncertainty_npz or None)``, for ``decode_map``.
    """
    def pack(**arrays):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    labels_npz = pack(array=np.asarray(labels, dtype=np.int32))
    if uncertainty is None:
        return labels_npz, None
    values = np.nan_to_num(np.asarray(uncertainty, dtype=np.float64), nan=0.0)
    if values.min() < 0:
        raise DatabaseError("uncertainty map has negative values; pass a map >= 0 (e.g. mutual "
                            "information)")
    top = float(values.max())
    levels = np.zeros(values.shape, np.uint8) if top == 0 else \
        np.rint(values / top * UNCERTAINTY_LEVELS).astype(np.uint8)
    return labels_npz, pack(levels=levels, top=np.float64(top))


def decode_map(blob: bytes | None) -> np.ndarray | None:
    """Inverse of ``encode_maps`` for one map: int32 labels, float32 uncertainty, None stays."""
    if blob is None:
        return None
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        if "array" in data:
            return data["array"]
        scale = float(data["top"]) / UNCERTAINTY_LEVELS
        return (data["levels"].astype(np.float32) * np.float32(scale)).astype(np.float32)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _normalise_doi(doi) -> str | None:
    if not doi:
        return None
    doi = str(doi).strip()
    doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", doi, flags=re.IGNORECASE)
    return doi.lower() or None


def _key_doi(key: str | None, doi=None) -> str | None:
    """The DOI a crawl key resolves to: ``doi`` if given, else the key's own DOI (``doi:10.1/x``,
    ``10.1/x``, a DOI URL); None for other keys (``pmcid:PMC1``)."""
    for text in (doi, key):
        value = _normalise_doi(text)
        if value and value.startswith("10."):
            return value
    return None


def _named_id(value: str, ids: list[str]) -> tuple[str | None, list[str]]:
    """The id of ``ids`` that ``value`` names (the id itself or a unique start of it, as ``git``
    takes hashes), else None; with the ids ``value`` starts (for the error)."""
    if value in ids:
        return value, [value]
    matches = [i for i in ids if value and i.startswith(value)]
    return (matches[0] if len(matches) == 1 else None), matches


def _as_number(value, name: str, kind=float):
    """``kind(value)`` for a filter argument, or a one-line DatabaseError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise DatabaseError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
        if kind is int and not number.is_integer():
            raise ValueError
    except ValueError:
        raise DatabaseError(f"{name} must be {'a whole number' if kind is int else 'a number'}, "
                            f"got {value!r}") from None
    return int(number) if kind is int else number


def _fts_phrase(text: str) -> str:
    """User text -> one FTS5 phrase, so punctuation such as "Au-NP" is not FTS syntax."""
    return '"' + str(text).replace('"', '""') + '"'


def caption_words(text: str | None) -> str:
    """``" silica nanoparticles "``: the words of ``text`` lower-cased, accents dropped, each
    between single spaces (as FTS5's unicode61 tokenizer splits them), so that a phrase is
    found with ``instr`` as the full-text index would find it."""
    folded = unicodedata.normalize("NFKD", str(text or "")).encode("ascii", "ignore").decode()
    return " " + " ".join(re.findall(r"[a-z0-9]+", folded.lower())) + " "


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise DatabaseError(f"expected a dict (or an object with to_dict()), got {type(obj).__name__}")


def _clean(value):
    """numpy scalars / NaN / containers -> values SQLite stores (NaN -> NULL)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=_json_default)
    return value


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _first_keyword(query: str) -> str:
    text = re.sub(r"(--[^\n]*\n?|/\*.*?\*/)", " ", query, flags=re.DOTALL).strip().lstrip("(")
    match = re.match(r"[A-Za-z]+", text)
    return match.group(0).upper() if match else ""


class Database:
    """The idx particle database (one SQLite file, or in memory for tests).

    Parameters
    ----------
    path : str or Path, optional
        Database file; created with the schema if missing.
    memory : bool, optional
        Use an in-memory database instead of ``path``.
    readonly : bool, optional
        Open an existing file read-only (queries, plots, stats); nothing can be written.
    busy_timeout_s : float, optional
        How long a write waits for another process's lock before ``DatabaseError``.

    Raises
    ------
    DatabaseError
        If the file is not SQLite, its folder is missing or not writable, it is locked past the
        busy timeout, or ``readonly`` is asked for a file that does not exist.
    """

    def __init__(self, path: str | Path | None = None, memory: bool = False,
                 readonly: bool = False, busy_timeout_s: float = BUSY_TIMEOUT_S):
        if (path is None) == (not memory):
            raise DatabaseError("pass a database path, or memory=True (not both)")
        self.path = None if memory else Path(path)
        self.readonly = readonly
        self.immutable = False  # set when a clean database in an unwritable folder is opened
        self.busy_timeout_s = busy_timeout_s
        self._pooled_warned = False  # warn_if_runs_pooled says it once
        where = "memory" if memory else str(self.path)
        with self._errors(f"open {where}"):
            self.db = sqlite_utils.Database(self._connect(), execute_plugins=False)
            self.conn.execute("PRAGMA schema_version").fetchone()  # fails if not SQLite
            if not readonly:
                self._refuse_foreign()
                self.conn.execute("PRAGMA foreign_keys = ON")
                if not memory:
                    self.db.enable_wal()
                self._create_schema()
            elif not self.db.table("particles").exists():
                raise DatabaseError(f"{where} has no idx tables; run `idx extract` into it first")

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            return sqlite3.connect(":memory:")
        if self.path.is_dir():
            raise DatabaseError(f"{self.path} is a folder; pass a database file path")
        if self.readonly:
            if not self.path.exists():
                raise DatabaseError(f"no database at {self.path}; check the path or create it "
                                    "with `idx extract`")
            # A writable file is opened read-write but query-only: a mode=ro connection cannot
            # checkpoint, so closing it would leave empty -wal and -shm files beside the database.
            writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
            uri = self.path.resolve().as_uri() + ("?mode=rw" if writable else "?mode=ro")
            if writable:
                conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s)
            else:
                conn = self._connect_unwritable(uri)
            conn.execute("PRAGMA query_only = ON")
            return conn
        if not self.path.parent.exists():
            raise DatabaseError(f"folder {self.path.parent} does not exist; create it or pass "
                                "another database path")
        return sqlite3.connect(str(self.path), timeout=self.busy_timeout_s)

    def _connect_unwritable(self, uri: str) -> sqlite3.Connection:
        """A WAL database in a folder that cannot be written (a read-only share, a published copy)
        cannot be read through mode=ro: SQLite must create its -wal and -shm files first. When the
        database was closed cleanly (no write-ahead log beside it) every row is in the file
        itself, so it is opened immutable instead. So is a read-only file in a folder that can be
        written: mode=ro would create -wal and -shm files there, with the file's read-only mode,
        leave them on close, and they would block writing once the file is made writable."""
        wal = self.path.with_name(self.path.name + "-wal")
        logged = wal.is_file() and wal.stat().st_size > 0
        if os.access(self.path.parent, os.W_OK) and not logged:
            self.immutable = True
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=self.busy_timeout_s)
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s)
            conn.execute("PRAGMA schema_version").fetchone()
            return conn
        except sqlite3.OperationalError:
            if conn is not None:
                conn.close()
        if logged:
            raise DatabaseError(f"{self.path} has unsaved changes in {wal.name} and its folder cannot "
                                "be written; open it once where it can be written (or copy the "
                                "folder) so SQLite folds the log in")
        self.immutable = True
        return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=self.busy_timeout_s)

    def close(self) -> None:
        """Close the connection (the database file stays consistent)."""
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Turn sqlite3 errors into one-line ``DatabaseError`` saying what to do."""
        where = "the in-memory database" if self.path is None else str(self.path)
        try:
            yield
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            message = str(exc)
            if isinstance(exc, pd.errors.DatabaseError) and "Execution failed" in message:
                message = message.rsplit("': ", 1)[-1]  # pandas wraps sqlite's message
            if "no such table" in message or "no such column" in message:
                hint = (f"{where} is not a complete idx database ({message}); make one with "
                        "`idx extract` or `idx crawl`, or read this one with `idx query --sql`")
            elif "not a database" in message or "file is encrypted" in message:
                hint = f"{where} is not an SQLite database; pass an idx database or a new path"
            elif "locked" in message or "busy" in message:
                hint = (f"{where} is locked by another process (waited {self.busy_timeout_s:g} s); "
                        "wait for it to finish or use another database file")
            elif "readonly" in message or "read-only" in message:
                hint = (f"{where} cannot be written ({message}); " + (
                    "this connection only reads (open it without readonly=True to write)"
                    if self.readonly else "copy it to a folder you may write, or give another path"))
            elif "unable to open" in message:
                hint = (f"cannot open {where} ({message}); check the path and its folder's "
                        "permissions")
            elif "FOREIGN KEY" in message:
                hint = (f"cannot {action}: it refers to a run, figure or article not in {where}; "
                        "add that first (start_run / add_article / add_figure)")
            else:
                hint = f"cannot {action} in {where}: {message}"
            raise DatabaseError(hint) from None

    @contextlib.contextmanager
    def _write(self):
        """One write transaction. ``BEGIN IMMEDIATE`` takes the write lock first, so another
        process's lock is waited for (``busy_timeout_s``): a deferred ``BEGIN`` that has read
        first cannot wait, SQLite refuses its upgrade at once. Inside an open transaction it is
        a savepoint (``sqlite_utils`` ``atomic``)."""
        if self.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ schema

    def _refuse_foreign(self) -> None:
        """Refuse, before anything is written, an SQLite file holding tables but not idx's: any
        idx database has a runs table (made first) with its params; nothing is added to another."""
        names = set(self.db.table_names())
        if names and ("runs" not in names or "params" not in self.db.table("runs").columns_dict):
            where = "the in-memory database" if self.path is None else str(self.path)
            shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
            raise DatabaseError(f"{where} is an SQLite database of something else (tables: {shown}); "
                                "idx leaves it as it is: give a new file for the idx database")

    def _create_schema(self) -> None:
        db = self.db
        with self._write():
            db.table("runs").create(
                {"id": str, "model_version": str, "weights_sha256": str, "params": str,
                 "started_at": str, "last_used_at": str},
                pk="id", if_not_exists=True, not_null={"model_version"})
            db.table("articles").create(
                {"id": str, "key": str, "doi": str, "title": str, "journal": str, "year": int,
                 "authors": str, "license": str, "source": str, "source_path": str, "url": str,
                 "added_at": str},
                pk="id", if_not_exists=True)
            db.table("figures").create(
                {"id": str, "article_id": str, "figure_key": str, "label": str, "caption": str,
                 "image_path": str, "image_url": str, "image_sha256": str, "shared_caption_words": str},
                pk="id", if_not_exists=True, foreign_keys=[("article_id", "articles", "id")])
            panel_columns = {
                "id": str, "figure_id": str, "run_id": str, "bbox_x0": int, "bbox_y0": int,
                "bbox_x1": int, "bbox_y1": int, "label": str, "kind": str, "technique": str,
                "caption": str, "nm_per_px": float, "scale_source": str, "scale_text": str,
                "image_path": str, "image_sha256": str, "height_px": int, "width_px": int,
                "count": int, "count_measured": int, "units": str,
            }
            panel_columns.update({name: float for name in SUMMARY_COLUMNS})
            panel_columns.update({"summary": str, "created_at": str})
            db.table("panels").create(
                panel_columns, pk="id", if_not_exists=True,
                foreign_keys=[("figure_id", "figures", "id"), ("run_id", "runs", "id")])
            db.table("panel_maps").create(
                {"panel_id": str, "labels_npz": bytes, "uncertainty_npz": bytes},
                pk="panel_id", if_not_exists=True, foreign_keys=[("panel_id", "panels", "id")])
            particle_columns = {"id": str, "panel_id": str, "run_id": str}
            particle_columns.update({name: _column_type(name) for name in PARTICLE_COLUMNS})
            db.table("particles").create(
                particle_columns, pk="id", if_not_exists=True,
                foreign_keys=[("panel_id", "panels", "id"), ("run_id", "runs", "id")])
            db.table("crawl_failures").create(
                {"key": str, "url": str, "reason": str, "attempts": int, "first_failed_at": str,
                 "last_failed_at": str, "doi": str},
                pk="key", if_not_exists=True)
            if "doi" not in db.table("crawl_failures").columns_dict:  # older idx: no doi column
                db.table("crawl_failures").add_column("doi", str)
            db.table("crawl_figure_failures").create(
                {"key": str, "figure_key": str, "url": str, "kind": str, "reason": str,
                 "permanent": int, "attempts": int, "first_failed_at": str, "last_failed_at": str},
                pk=("key", "figure_key"), if_not_exists=True)
            db.table("article_keys").create(
                {"key": str, "article_id": str, "source": str, "added_at": str},
                pk="key", if_not_exists=True, foreign_keys=[("article_id", "articles", "id")])
            # databases of older versions: their crawl keys, DOIs of doi: keys, failures since stored
            self.conn.execute(
                "INSERT OR IGNORE INTO article_keys (key, article_id, source, added_at) "
                "SELECT key, id, source, added_at FROM articles WHERE key IS NOT NULL")
            self.conn.execute("UPDATE crawl_failures SET doi = lower(trim(substr(key, 5))) "
                              "WHERE doi IS NULL AND key LIKE 'doi:10.%'")
            self.conn.execute("DELETE FROM crawl_failures WHERE key IN (SELECT key FROM article_keys) "
                              "OR doi IN (SELECT doi FROM articles WHERE doi IS NOT NULL)")
            for column in ("image_sha256", "shared_caption_words"):  # figures of older idx lack them
                if column not in db.table("figures").columns_dict:
                    db.table("figures").add_column(column, str)
            indexes = {
                "articles": (["doi"], ["key"], ["year"]),
                "figures": (["article_id"], ["image_sha256"]),
                "article_keys": (["article_id"],),
                "crawl_failures": (["doi"],),
                "panels": (["figure_id"], ["run_id"], ["technique"], ["diameter_mean_nm"]),
                "particles": (["panel_id"], ["run_id"], ["diameter_nm"], ["shape"]),
            }
            for table, column_sets in indexes.items():
                for columns in column_sets:
                    db.table(table).create_index(columns, if_not_exists=True)
        for table, columns in (("articles", ["title"]), ("figures", ["caption"]),
                               ("panels", ["caption"])):
            if not db.table(f"{table}_fts").exists():
                db.table(table).enable_fts(columns, create_triggers=True)

    # ------------------------------------------------------------------ writing

    def start_run(self, model_version: str, weights_sha256: str, params: dict) -> str:
        """Register a model run; the same version, weights and parameters give the same id.

        Parameters
        ----------
        model_version : str
            Model name and version, e.g. ``"bpartis-1.0"``.
        weights_sha256 : str
            sha256 of the weights file.
        params : dict
            Extraction parameters (JSON-serialisable); any change makes a new run row.

        Returns
        -------
        str
            The run id.
        """
        params_json = json.dumps(params or {}, sort_keys=True, default=_json_default)
        run_id = make_id("run", model_version, weights_sha256, params_json)
        now = _now()
        with self._errors("start a run"), self._write():
            runs = self.db.table("runs")
            if self.conn.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone():
                runs.update(run_id, {"last_used_at": now})
            else:
                runs.insert({"id": run_id, "model_version": model_version,
                             "weights_sha256": weights_sha256, "params": params_json,
                             "started_at": now, "last_used_at": now})
        return run_id

    def add_article(self, key_or_article, article: dict | None = None,
                    source: str | None = None) -> str:
        """Store (or update) an article and its figures; returns the article id.

        Two call forms:

        * pipeline: ``add_article(article)``;
        * crawler: ``add_article(key, article, source)`` with the crawl key (DOI, PMCID, ...) and
          the name or URL of the source it came from.

        Parameters
        ----------
        key_or_article : str or dict
            Crawl key, or the article dict itself.
        article : dict, optional
            With the key form: ``doi``, ``title``, ``journal``, ``year``, ``authors`` (list or
            str), ``license``, ``source_path``/``path``, ``url``, and optionally ``figures``: list
            of figure dicts (see ``add_figure``), stored too.
        source : str, optional
            Where the article came from (crawler source name or URL).

        Returns
        -------
        str
            Stable article id: from the DOI, else the key, else the source path/URL.
        """
        if isinstance(key_or_article, str):
            key, article = key_or_article, _as_dict(article)
            if not article:
                raise DatabaseError(f"add_article({key!r}, ...) needs the article dict too")
        else:
            key, article = None, _as_dict(key_or_article)
        key = key or article.get("key")
        doi = _normalise_doi(article.get("doi")) or (
            _normalise_doi(key) if key and str(key).startswith("10.") else None)
        source_path = article.get("source_path") or article.get("path")
        url = article.get("url") or article.get("source_url")
        if doi:
            article_id = make_id("doi", doi)
        elif key:
            article_id = make_id("key", key)
        elif source_path or url:
            article_id = make_id("source", str(source_path or url))
        else:
            raise DatabaseError("article has no doi, key, source_path or url to identify it; "
                                "pass at least one")
        authors = article.get("authors")
        row = {
            "id": article_id, "key": key, "doi": doi, "title": article.get("title"),
            "journal": article.get("journal"), "year": _as_int(article.get("year")),
            "authors": json.dumps(authors) if isinstance(authors, (list, tuple)) else authors,
            "license": article.get("license"), "source": source or article.get("source"),
            "source_path": str(source_path) if source_path else None, "url": url,
            "added_at": _now(),
        }
        with self._errors(f"add article {doi or key or source_path or url}"), self._write():
            # fields not given now keep their stored values (e.g. the crawl key)
            self.db.table("articles").upsert(
                {k: v for k, v in row.items() if v is not None}, pk="id")
            if key:  # every key an article was stored under stays findable
                self.conn.execute(
                    "INSERT INTO article_keys (key, article_id, source, added_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "article_id = excluded.article_id, source = COALESCE(excluded.source, source)",
                    [key, article_id, row["source"], row["added_at"]])
            # the failures of every key of this article or its DOI: it is stored now
            self.conn.execute(
                "DELETE FROM crawl_failures WHERE key = ? OR doi = ? OR key IN "
                "(SELECT key FROM article_keys WHERE article_id = ?)", [key, doi, article_id])
            stored = []
            for index, figure in enumerate(article.get("figures") or []):
                figure = _as_dict(figure)
                figure = {**figure, "id": _figure_key(figure, index)}  # the crawler's key
                self.add_figure(article_id, figure)
                stored.append(figure["id"])
            if stored:  # a stored figure is no longer missing, whichever key it was missed under
                self.conn.executemany(
                    "DELETE FROM crawl_figure_failures WHERE figure_key = ? AND key IN "
                    "(SELECT key FROM article_keys WHERE article_id = ?)",
                    [(figure_key, article_id) for figure_key in stored])
        return article_id

    add_article_from_crawl = add_article

    def has_article(self, key: str) -> bool:
        """Whether an article stored under this crawl key (any of its keys), DOI or id exists.

        A database written by an older idx and opened read-only has no ``article_keys``: there
        only the last crawl key stored per article is found.
        """
        doi = _normalise_doi(key)
        with self._errors("look up an article"):
            if self._has_table("article_keys") and self.conn.execute(
                    "SELECT 1 FROM article_keys WHERE key = ?", [key]).fetchone():
                return True
            row = self.conn.execute(
                "SELECT 1 FROM articles WHERE key = ? OR doi = ? OR id = ? LIMIT 1",
                [key, doi, key]).fetchone()
        return row is not None

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 [name]).fetchone() is not None

    def _has_column(self, table: str, column: str) -> bool:
        """Whether ``table`` has ``column`` (databases of an older idx lack the newer ones)."""
        return column in self.db.table(table).columns_dict

    def record_failure(self, key: str, url: str, reason: str, doi: str | None = None) -> None:
        """Remember that the crawler could not fetch ``key`` from ``url`` (counts attempts).

        The row is deleted when ``key``, another key of the same article or an article with the
        same DOI is later stored (``add_article``). If that DOI is already stored, nothing is
        recorded (the article is there, under another key).

        Parameters
        ----------
        key : str
            Crawl key (``"pmcid:PMC3460867"``, ``"doi:10.1038/srep01497"``).
        url : str
            What was fetched.
        reason : str
            The error.
        doi : str, optional
            The DOI the source listed for ``key``; a ``doi:`` key's own DOI is used without it.
        """
        now = _now()
        doi = _key_doi(key, doi)
        with self._errors("record a crawl failure"), self._write():
            if doi and self.conn.execute("SELECT 1 FROM articles WHERE doi = ? LIMIT 1",
                                         [doi]).fetchone():
                logger.info("crawl failure of %s not recorded: DOI %s is stored under another key",
                            key, doi)
                self.conn.execute("DELETE FROM crawl_failures WHERE key = ?", [key])
                return
            old = self.conn.execute("SELECT attempts, first_failed_at FROM crawl_failures "
                                    "WHERE key = ?", [key]).fetchone()
            self.db.table("crawl_failures").upsert(
                {"key": key, "url": url, "reason": str(reason),
                 "attempts": (old[0] if old else 0) + 1,
                 "first_failed_at": old[1] if old else now, "last_failed_at": now, "doi": doi},
                pk="key")

    def record_figure_failure(self, key: str, failure: dict) -> None:
        """Remember that one figure image of the crawled article ``key`` could not be downloaded.

        Parameters
        ----------
        key : str
            Crawl key of the article (``"pmcid:PMC3460867"``).
        failure : dict
            ``figure_id`` (the figure's id in the article), ``url``, ``kind`` (``"HTTP 404"``,
            ``"timeout"``...), ``reason`` (the full error) and ``permanent`` (bool). Recording
            the same figure again updates the row and counts ``attempts``.
        """
        figure_key = failure.get("figure_id")
        if not key or not figure_key:
            raise DatabaseError("record_figure_failure needs the article key and the failure's "
                                f"figure_id; got key={key!r}, figure_id={figure_key!r}")
        now = _now()
        with self._errors("record a figure failure"), self._write():
            old = self.conn.execute(
                "SELECT attempts, first_failed_at FROM crawl_figure_failures "
                "WHERE key = ? AND figure_key = ?", [key, str(figure_key)]).fetchone()
            self.db.table("crawl_figure_failures").upsert(
                {"key": key, "figure_key": str(figure_key), "url": failure.get("url"),
                 "kind": failure.get("kind"), "reason": str(failure.get("reason")),
                 "permanent": int(bool(failure.get("permanent"))),
                 "attempts": (old[0] if old else 0) + 1,
                 "first_failed_at": old[1] if old else now, "last_failed_at": now},
                pk=("key", "figure_key"))

    def list_missing_images(self, key: str) -> list[dict]:
        """Figures of the article stored under crawl ``key`` whose downloaded image file is gone
        (the crawl cache was moved or cleared) and that have a URL to fetch it from again.

        Returns
        -------
        list of dict
            ``{"figure_id", "url"}`` per such figure.
        """
        articles, params = "SELECT id FROM articles WHERE key = ? OR doi = ? OR id = ?", [
            key, _normalise_doi(key), key]
        with self._errors("list missing figure images"):
            if self._has_table("article_keys"):
                articles += " UNION SELECT article_id FROM article_keys WHERE key = ?"
                params.append(key)
            rows = self.conn.execute(
                "SELECT figure_key, image_url, image_path FROM figures WHERE image_url IS NOT NULL "
                f"AND article_id IN ({articles})", params).fetchall()
        return [{"figure_id": figure_key, "url": url} for figure_key, url, path in rows
                if not path or not Path(path).is_file()]

    def list_figure_failures(self, key: str | None = None) -> list[dict]:
        """Figures of crawled articles still missing (of article ``key``, or of all).

        Returns
        -------
        list of dict
            ``{"key", "figure_id", "url", "kind", "reason", "permanent" (bool), "attempts",
            "first_failed_at", "last_failed_at"}``, by key and figure id; empty for a database
            written before figure failures were recorded.
        """
        with self._errors("list figure failures"):
            if not self.db.table("crawl_figure_failures").exists():
                return []
            query = ("SELECT key, figure_key, url, kind, reason, permanent, attempts, "
                     "first_failed_at, last_failed_at FROM crawl_figure_failures")
            rows = self.conn.execute(query + (" WHERE key = ?" if key is not None else "")
                                     + " ORDER BY key, figure_key",
                                     [key] if key is not None else []).fetchall()
        names = ("key", "figure_id", "url", "kind", "reason", "permanent", "attempts",
                 "first_failed_at", "last_failed_at")
        return [{**dict(zip(names, row)), "permanent": bool(row[5])} for row in rows]

    def add_figure(self, article_id: str, figure: dict) -> str:
        """Store (or update) a figure of a stored article; returns the figure id.

        Parameters
        ----------
        article_id : str
            From ``add_article``.
        figure : dict
            ``id`` (the figure's id within the article, e.g. ``"fig2"``), ``label``, ``caption``,
            ``image`` or ``image_path`` (local file), ``image_url``, ``image_sha256`` (pixel
            digest; a stored figure given other pixels loses the panels measured on the old ones),
            ``shared_caption_words`` (:func:`caption_words` of the caption's text that no panel
            label owns, for ``material``).
        """
        figure = _as_dict(figure)
        figure_key = figure.get("id") or figure.get("label") or figure.get("image_url") \
            or figure.get("image") or figure.get("image_path")
        if not figure_key:
            raise DatabaseError("figure has no id, label or image to identify it; pass one")
        figure_id = make_id("figure", article_id, str(figure_key))
        image_path = figure.get("image_path") or figure.get("image")
        row = {"id": figure_id, "article_id": article_id, "figure_key": str(figure_key),
               "label": figure.get("label"), "caption": figure.get("caption"),
               "image_path": str(image_path) if image_path else None,
               "image_url": figure.get("image_url"), "image_sha256": figure.get("image_sha256"),
               "shared_caption_words": figure.get("shared_caption_words")}
        with self._errors(f"add figure {figure_key}"):
            stored = self.conn.execute("SELECT image_sha256 FROM figures WHERE id = ?", [figure_id]).fetchone()
        if row["image_sha256"] and stored and stored[0] and stored[0] != row["image_sha256"]:
            # the file was replaced by another image: what was measured on the old one goes
            dropped = self.drop_figure_panels(figure_id)
            logger.warning("%s: the image changed since it was stored; its %d earlier panel(s) removed",
                           image_path or figure_key, dropped)
        with self._errors(f"add figure {figure_key}"):
            self.db.table("figures").upsert(
                {k: v for k, v in row.items() if v is not None}, pk="id", alter=True)
        return figure_id

    # a micrograph stored as itself (idx extract IMAGE), not as a figure of an article
    _STANDALONE = "(a.doi IS NULL AND a.key IS NULL AND a.source_path = f.image_path)"

    def figure_with_image(self, image_sha256: str, run_id: str) -> dict | None:
        """``{"id", "image_path", "panels", "standalone"}`` of a stored figure with these pixels
        and panels of this run (the same micrograph at another path, or as an article's figure
        and as a file of its own); ``standalone``: stored as a micrograph file, not an article's
        figure. Article figures come first."""
        with self._errors("look up a figure"):
            row = self.conn.execute(
                f"SELECT f.id, f.image_path, COUNT(pa.id), {self._STANDALONE} FROM figures f "
                "JOIN articles a ON a.id = f.article_id JOIN panels pa ON pa.figure_id = f.id "
                "WHERE f.image_sha256 = ? AND pa.run_id = ? GROUP BY f.id "
                f"ORDER BY {self._STANDALONE}, f.rowid LIMIT 1", [image_sha256, run_id]).fetchone()
        return None if row is None else dict(zip(("id", "image_path", "panels", "standalone"),
                                                 (*row[:3], bool(row[3]))))

    def stale_figures_at(self, image_path: str, image_sha256: str) -> list[str]:
        """Micrograph files stored from ``image_path`` with other pixels: the file was replaced
        since (also after a move had re-pointed an older figure there)."""
        with self._errors("look up a figure"):
            return [r[0] for r in self.conn.execute(
                f"SELECT f.id FROM figures f JOIN articles a ON a.id = f.article_id WHERE f.image_path = ? "
                f"AND f.image_sha256 IS NOT NULL AND f.image_sha256 != ? AND {self._STANDALONE}",
                [str(image_path), image_sha256])]

    def drop_figure(self, figure_id: str) -> int:
        """Delete a figure with its panels (all runs), and its article when no other figure or
        crawl key keeps it; returns the number of panels deleted."""
        dropped = self.drop_figure_panels(figure_id)
        with self._errors(f"remove figure {figure_id}"), self._write():
            row = self.conn.execute("SELECT article_id FROM figures WHERE id = ?", [figure_id]).fetchone()
            self.conn.execute("DELETE FROM figures WHERE id = ?", [figure_id])
            if row is not None:
                self.conn.execute(
                    "DELETE FROM articles WHERE id = ? AND NOT EXISTS (SELECT 1 FROM figures WHERE article_id = ?) "
                    "AND NOT EXISTS (SELECT 1 FROM article_keys WHERE article_id = ?)", [row[0]] * 3)
        return dropped

    def set_figure_image_path(self, figure_id: str, image_path: str) -> None:
        """Point a stored figure at its image's new place (a moved file); a micrograph stored as
        itself has its article's ``source_path`` moved with it."""
        with self._errors("update a figure"), self._write():
            self.conn.execute("UPDATE articles SET source_path = ? WHERE source_path = (SELECT image_path "
                              "FROM figures WHERE id = ?) AND id = (SELECT article_id FROM figures WHERE id = ?)",
                              [str(image_path), figure_id, figure_id])
            self.conn.execute("UPDATE figures SET image_path = ? WHERE id = ?", [str(image_path), figure_id])

    def set_figure_caption(self, figure_id: str, caption: str, shared_caption_words: str | None = None) -> None:
        """Give a stored figure a caption (and the words of it no panel label owns)."""
        with self._errors("update a figure"), self._write():
            self.conn.execute("UPDATE figures SET caption = ?, shared_caption_words = ? WHERE id = ?",
                              [caption, shared_caption_words, figure_id])

    def drop_figure_panels(self, figure_id: str) -> int:
        """Delete every panel of a figure (all runs), with its particles and maps; returns how many.
        For a figure whose image changed since they were measured."""
        with self._errors(f"remove the panels of figure {figure_id}"), self._write():
            rows = self.conn.execute("SELECT id, image_path FROM panels WHERE figure_id = ?", [figure_id]).fetchall()
            for table, column in (("particles", "panel_id"), ("panel_maps", "panel_id"), ("panels", "id")):
                self.conn.executemany(f"DELETE FROM {table} WHERE {column} = ?", [[i] for i, _ in rows])
            crops = {path for _, path in rows if path} - {
                r[0] for r in self.conn.execute("SELECT DISTINCT image_path FROM panels WHERE image_path IS NOT NULL")}
        for crop in crops:  # the crops no other panel shows (content-named, shared between runs)
            with contextlib.suppress(OSError):  # a crop that cannot be removed only takes space
                Path(crop).unlink(missing_ok=True)
        return len(rows)

    def drop_run_if_empty(self, run_id: str) -> bool:
        """Delete a run that stored no panel (an extraction that failed or found nothing)."""
        with self._errors("tidy the runs"), self._write():
            if self.conn.execute("SELECT 1 FROM panels WHERE run_id = ? LIMIT 1", [run_id]).fetchone():
                return False
            self.conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
        return True

    def panel_id(self, run_id: str, figure_id: str, bbox) -> str:
        """The stable id ``add_panel`` gives a panel (figure + bbox + run)."""
        box = bbox_to_dict(bbox)
        return make_id("panel", figure_id, [box[k] for k in sorted(box)], run_id)

    def stored_panel(self, run_id: str, figure_id: str, bbox) -> dict | None:
        """The caption details this run stored for this panel (``label``, ``technique``,
        ``caption``), or None if it has not stored it (lets an extraction resume)."""
        with self._errors("look up a panel"):
            row = self.conn.execute("SELECT label, technique, caption FROM panels WHERE id = ?",
                                    [self.panel_id(run_id, figure_id, bbox)]).fetchone()
        return None if row is None else dict(zip(("label", "technique", "caption"), row))

    def add_panel(self, run_id: str, figure_id: str, panel: dict, particles: pd.DataFrame,
                  labels: np.ndarray, uncertainty: np.ndarray | None, summary: dict) -> str:
        """Store one panel, its particles and maps in one transaction; returns the panel id.

        Re-adding the same panel (same figure, bbox and run) replaces its rows, never
        duplicates them; if anything fails, nothing of the panel is written. The transaction is
        ``_write()`` rather than ``with conn:``: sqlite-utils commits its own writes inside a
        plain ``with conn:`` block, while inside ``_write()`` they nest as savepoints.

        Parameters
        ----------
        run_id, figure_id : str
            From ``start_run`` and ``add_figure``.
        panel : dict
            ``bbox`` [x0, y0, x1, y1] (px in the figure), ``label``, ``kind``, ``technique``,
            ``caption``, ``nm_per_px``, ``scale_source``, ``scale_text``, ``image_path``,
            ``image_sha256``.
        particles : pandas.DataFrame
            ``measure_particles`` output for the panel.
        labels : ndarray of int, shape (M, N)
            Instance map.
        uncertainty : ndarray of float, shape (M, N), optional
            Uncertainty map, >= 0 (stored quantised to 8 bits, see ``encode_maps``).
        summary : dict
            ``summarise_panel`` output.
        """
        panel = _as_dict(panel)
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise DatabaseError(f"labels must be 2-D, got shape {labels.shape}")
        if uncertainty is not None and np.shape(uncertainty) != labels.shape:
            raise DatabaseError(f"uncertainty shape {np.shape(uncertainty)} != labels shape "
                                f"{labels.shape}; pass the maps of the same panel")
        missing = [c for c in PARTICLE_COLUMNS if c not in particles.columns]
        if missing:
            raise DatabaseError(f"particles lack columns {missing[:5]}; pass measure_particles "
                                "output")
        box = bbox_to_dict(panel.get("bbox") or [0, 0, labels.shape[1], labels.shape[0]])
        panel_id = self.panel_id(run_id, figure_id, [box[k] for k in
                                                     ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")])
        summary = summary or {}
        row = {"id": panel_id, "figure_id": figure_id, "run_id": run_id, **box}
        for name in ("label", "kind", "technique", "caption", "nm_per_px", "scale_source",
                     "scale_text", "image_path", "image_sha256"):
            row[name] = _clean(panel.get(name))
        row["image_path"] = str(row["image_path"]) if row["image_path"] else None
        row.update({"height_px": int(labels.shape[0]), "width_px": int(labels.shape[1]),
                    "count": summary.get("count", len(particles)),
                    "count_measured": summary.get("count_measured"),
                    "units": summary.get("units")})
        row.update({name: _clean(summary.get(name)) for name in SUMMARY_COLUMNS})
        row["summary"] = json.dumps(summary, default=_json_default)
        row["created_at"] = _now()
        records = [
            {"id": f"{panel_id}-{int(rec['label'])}", "panel_id": panel_id, "run_id": run_id,
             **{name: _clean(rec[name]) for name in PARTICLE_COLUMNS}}
            for rec in particles.to_dict("records")
        ]
        labels_npz, unc_npz = encode_maps(labels, uncertainty)
        with self._errors(f"store panel {panel_id}"), self._write():
            self.db.table("panels").upsert(row, pk="id")
            self.conn.execute("DELETE FROM particles WHERE panel_id = ?", [panel_id])
            if records:
                self.db.table("particles").upsert_all(records, pk="id", alter=True)
            self.db.table("panel_maps").upsert(
                {"panel_id": panel_id, "labels_npz": labels_npz, "uncertainty_npz": unc_npz},
                pk="panel_id")
        logger.info("stored panel %s: %d particles", panel_id, len(records))
        return panel_id

    # ------------------------------------------------------------------ reading

    def load_panel_maps(self, panel_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Instance map (int32) and uncertainty map (float32 or None) stored for a panel.

        Raises
        ------
        DatabaseError
            If no maps are stored for ``panel_id``.
        """
        with self._errors("load panel maps"):
            row = self.conn.execute("SELECT labels_npz, uncertainty_npz FROM panel_maps "
                                    "WHERE panel_id = ?", [panel_id]).fetchone()
        if row is None:
            raise DatabaseError(f"no maps stored for panel {panel_id!r}; list panels with "
                                "`idx query DB --sql 'SELECT id FROM panels'`")
        return decode_map(row[0]), decode_map(row[1])

    def particles(self, material: str | None = None, technique: str | None = None,
                  min_diameter_nm: float | None = None, max_diameter_nm: float | None = None,
                  year: int | None = None, doi: str | None = None, run: str | None = None,
                  shape: str | None = None, panel: str | None = None,
                  limit: int | None = None) -> pd.DataFrame:
        """Particles matching all given filters, with panel and article context.

        Parameters
        ----------
        material : str, optional
            Phrase searched (full text): a panel matches when its own sub-caption names it, or
            its figure's caption names it and no other panel's sub-caption does, or the
            article's title names it and the figure's caption does not.
        technique : str, optional
            Panel technique, e.g. ``"TEM"`` (case-insensitive).
        min_diameter_nm, max_diameter_nm : float, optional
            Equivalent circular diameter range, nm (particles without scale are excluded);
            a negative or inverted range raises :class:`DatabaseError`.
        year : int, optional
            Publication year.
        doi : str, optional
            Article DOI.
        run : str, optional
            Run id.
        shape : str, optional
            Shape class (``idx.particles.SHAPE_CLASSES``).
        panel : str, optional
            Panel id.
        limit : int, optional
            At most this many rows.

        Returns
        -------
        pandas.DataFrame
            Particle columns plus ``technique``, ``figure_label``, ``doi``, ``year``, ``title``.
        """
        low = 0.0 if min_diameter_nm is None else _as_number(min_diameter_nm, "min_diameter_nm", float)
        high = math.inf if max_diameter_nm is None else _as_number(max_diameter_nm, "max_diameter_nm",
                                                                   float)
        if not 0 <= low <= high:
            raise DatabaseError(f"no diameter lies between {low:g} and {high:g} nm; give "
                                "0 <= min_diameter_nm <= max_diameter_nm")
        where, params = self._filters(material, technique, year, doi, run, panel)
        if min_diameter_nm is not None:
            where.append("p.diameter_nm >= ?")
            params.append(float(min_diameter_nm))
        if max_diameter_nm is not None:
            where.append("p.diameter_nm <= ?")
            params.append(float(max_diameter_nm))
        if shape is not None:
            if shape not in SHAPE_CLASSES:
                raise DatabaseError(f"shape {shape!r} is no shape class; use one of {', '.join(SHAPE_CLASSES)}")
            where.append("p.shape = ?")
            params.append(shape)
        query = ("SELECT p.*, pa.technique, f.label AS figure_label, a.doi, a.year, a.title "
                 "FROM particles p JOIN panels pa ON pa.id = p.panel_id "
                 "JOIN figures f ON f.id = pa.figure_id JOIN articles a ON a.id = f.article_id")
        return self._select(query, where, params, "p.panel_id, p.label", limit)

    def panel_stats(self, material: str | None = None, technique: str | None = None,
                    year: int | None = None, doi: str | None = None, run: str | None = None,
                    panel: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Per-panel statistics (counts, diameter statistics, scale) matching the filters.

        ``material``, ``technique``, ``year``, ``doi``, ``run``, ``panel`` and ``limit`` are those
        of ``particles`` (its diameter and shape filters select particles, not panels). Returns
        one row per panel with its article context; the full summary (histogram, g(r)) is the
        JSON column ``summary``.
        """
        where, params = self._filters(material, technique, year, doi, run, panel)
        query = ("SELECT pa.*, f.label AS figure_label, a.doi, a.year, a.title "
                 "FROM panels pa JOIN figures f ON f.id = pa.figure_id "
                 "JOIN articles a ON a.id = f.article_id")
        return self._select(query, where, params, "a.year, pa.id", limit)

    def _filters(self, material, technique, year, doi, run, panel):
        where, params = [], []
        if material:
            # the most specific text that names it: the panel's own sub-caption; the figure's
            # caption unless it names the material in another panel's sub-caption only; the
            # article's title when the figure does not name it at all
            # (a panel with a sub-caption of its own takes the figure's caption only through
            # the text no label owns, "Silica spheres: (a) TEM, (b) SEM", when the figure
            # records it; a sibling's letter that was not read must not lend it its words)
            phrase = _fts_phrase(material)
            in_panels = "SELECT rowid FROM panels_fts WHERE panels_fts MATCH ?"
            in_figure = "f.rowid IN (SELECT rowid FROM figures_fts WHERE figures_fts MATCH ?)"
            shared = ("pa.caption IS NOT NULL AND pa.caption != '' AND f.shared_caption_words IS NOT NULL"
                      if self._has_column("figures", "shared_caption_words") else "0")
            words = caption_words(material)
            where.append(
                f"(pa.rowid IN ({in_panels}) "
                f"OR (({shared}) AND instr(f.shared_caption_words, ?) > 0) "
                f"OR ({in_figure} AND NOT ({shared}) AND NOT EXISTS (SELECT 1 FROM panels sib WHERE "
                f"sib.figure_id = pa.figure_id AND sib.run_id = pa.run_id AND sib.rowid IN ({in_panels}))) "
                f"OR (a.rowid IN (SELECT rowid FROM articles_fts WHERE articles_fts MATCH ?) "
                f"AND NOT {in_figure}))")
            params += [phrase, words, phrase, phrase, phrase, phrase]
        if technique:
            where.append("pa.technique = ? COLLATE NOCASE")
            params.append(technique)
        if year is not None:
            where.append("a.year = ?")
            params.append(_as_number(year, "year", int))
        if doi:
            where.append("a.doi = ?")
            params.append(_normalise_doi(doi))
        if run is not None:  # "" is no run: an error, not every run
            where.append("pa.run_id = ?")
            params.append(self.resolve_run(run))
        else:
            self.warn_if_runs_pooled()
        if panel:
            where.append("pa.id = ?")
            params.append(panel)
        return where, params

    def resolve_panel(self, panel: str) -> str:
        """The id of the panel ``panel`` names: its id or a unique start of it (as
        :meth:`resolve_run`). An unknown or ambiguous one is a :class:`DatabaseError`."""
        panel = str(panel).strip()
        with self._errors("look up the panel"):
            ids = [r[0] for r in self.conn.execute(
                "SELECT id FROM panels WHERE id = ? OR (? != '' AND substr(id, 1, length(?)) = ?) LIMIT 6",
                [panel, panel, panel, panel])]
        found, matches = _named_id(panel, ids)
        if found:
            return found
        where = f"{self.path}" if self.path else "the database"
        what = f"matches several panels ({', '.join(matches[:5])}...)" if matches else "is no panel"
        raise DatabaseError(f"{panel!r} {what} of {where}; list them with `idx query {where} --panels`")

    def warn_if_runs_pooled(self, hint: str = "pass run=ID (ids and settings: Database.stats()['runs'])") -> None:
        """Log a warning, once per connection, when the panels of several extraction runs (other
        models or parameters) would be pooled by a query without a run."""
        if self._pooled_warned:
            return
        self._pooled_warned = True
        try:
            runs = self.conn.execute("SELECT COUNT(DISTINCT run_id) FROM panels").fetchone()[0]
        except sqlite3.Error:  # not an idx database: the query itself will say so
            return
        if runs > 1:
            where = self.path or "the database"
            logger.warning("%s holds %d extraction runs (other models or parameters) and rows of all of "
                           "them are pooled; %s", where, runs, hint)

    def resolve_run(self, run: str) -> str:
        """The id of the run ``run`` names: its id or a unique start of it (as ``git`` takes
        hashes). An unknown or ambiguous one is a :class:`DatabaseError` listing the runs."""
        with self._errors("look up the run"):
            ids = [r[0] for r in self.conn.execute("SELECT id FROM runs ORDER BY started_at")]
        run = str(run).strip()
        found, matches = _named_id(run, ids)
        if found:
            return found
        where = f"{self.path}" if self.path else "the database"
        known = ", ".join(ids) if ids else "none"
        what = "matches several runs" if matches else "is no run"
        raise DatabaseError(f"{run!r} {what} of {where} (runs: {known}); see `idx stats`")

    def _select(self, query, where, params, order, limit) -> pd.DataFrame:
        if where:
            query += " WHERE " + " AND ".join(where)
        query += f" ORDER BY {order}"
        if limit is not None:
            if _as_number(limit, "limit", int) < 1:
                raise DatabaseError(f"limit must be at least 1, got {limit!r}; pass None for every row")
            query += " LIMIT ?"
            params = [*params, int(limit)]
        with self._errors("query"):
            return pd.read_sql_query(query, self.conn, params=params)

    def sql(self, query: str) -> pd.DataFrame:
        """Run one read-only SQL statement (SELECT / WITH / EXPLAIN / VALUES).

        The statement runs with ``PRAGMA query_only`` on (as a read-only ``Database`` always
        is), so nothing can be written whatever it does.

        Raises
        ------
        DatabaseError
            For a write statement, a syntax error or an unknown table/column.
        """
        if not isinstance(query, str):
            raise DatabaseError(f"the query must be SQL text, got {type(query).__name__}")
        keyword = _first_keyword(query)
        if keyword in WRITE_KEYWORDS or not keyword:
            raise DatabaseError(f"only read-only queries (SELECT, WITH, EXPLAIN) are allowed; "
                                f"got {keyword or 'an empty query'}")
        was_query_only = self.conn.execute("PRAGMA query_only").fetchone()[0]
        self.conn.execute("PRAGMA query_only = ON")
        try:
            return pd.read_sql_query(query, self.conn)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            message = str(exc).split(":", 1)[-1].strip() if "Execution failed" in str(exc) \
                else str(exc)
            if "readonly" in message or "read-only" in message:
                raise DatabaseError("the query tries to write; --sql runs read-only queries only")\
                    from None
            raise DatabaseError(f"SQL error: {message}; fix the query (tables: "
                                f"{', '.join(TABLES)})") from None
        finally:
            self.conn.execute(f"PRAGMA query_only = {int(was_query_only)}")

    def stats(self) -> dict:
        """Summary of the database: rows per table, runs, techniques, shapes, years, size, crawl.

        ``diameter_mean_nm`` is the mean over the ``particles_measured``: particles with a scale
        not touching their panel's edge (as the panel summaries and ``idx plot --all``).

        ``crawl`` is ``{"articles_failed", "figures_missing", "figures_missing_permanent"}``:
        crawl failures of keys not stored since (a database of an older idx opened read-only can
        still hold rows of stored keys in ``crawl_failures``) and figure images still missing.
        Tables an older database lacks count 0.
        """
        with self._errors("summarise the database"):
            counts = {t: self.db.table(t).count if self._has_table(t) else 0 for t in TABLES}
            crawl = self.crawl_stats()
            runs = [dict(zip(("id", "model_version", "weights_sha256", "started_at", "panels", "params"), r))
                    for r in self.conn.execute(
                        "SELECT r.id, r.model_version, r.weights_sha256, r.started_at, "
                        "(SELECT COUNT(*) FROM panels WHERE run_id = r.id), r.params FROM runs r "
                        "ORDER BY r.started_at")]
            for run in runs:
                try:
                    run["params"] = json.loads(run["params"] or "{}")
                except ValueError:
                    run["params"] = {}
            techniques = dict(self.conn.execute(
                "SELECT COALESCE(technique, 'unknown'), COUNT(*) FROM panels GROUP BY 1"))
            shapes = dict(self.conn.execute(
                "SELECT COALESCE(shape, 'unknown'), COUNT(*) FROM particles GROUP BY 1"))
            # the mean over whole particles, as the panel summaries and `idx plot --all`: one cut
            # by a panel's edge is measured short
            scaled, measured, diameter = self.conn.execute(
                "SELECT COUNT(diameter_nm), COUNT(CASE WHEN NOT touches_border THEN diameter_nm END), "
                "AVG(CASE WHEN NOT touches_border THEN diameter_nm END) FROM particles").fetchone()
            years = self.conn.execute("SELECT MIN(year), MAX(year) FROM articles").fetchone()
        size = None
        if self.path is not None:  # the database file plus its write-ahead log
            size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"))
                       if p.exists())
        return {"path": str(self.path) if self.path else ":memory:", "size_bytes": size,
                "tables": counts, "particles_with_scale": scaled,
                "particles_measured": measured, "diameter_mean_nm": diameter, "years": list(years), "runs": runs,
                "techniques": techniques, "shapes": shapes, "crawl": crawl}

    def crawl_stats(self) -> dict:
        """Crawl failures still open: ``{"articles_failed", "figures_missing",
        "figures_missing_permanent"}`` (see ``stats``)."""
        stored = ("SELECT key FROM article_keys" if self._has_table("article_keys")
                  else "SELECT key FROM articles WHERE key IS NOT NULL") + \
            " UNION SELECT 'doi:' || doi FROM articles WHERE doi IS NOT NULL"
        with self._errors("count crawl failures"):
            failed = self.conn.execute(f"SELECT COUNT(*) FROM crawl_failures WHERE key NOT IN "
                                       f"({stored})").fetchone()[0] \
                if self._has_table("crawl_failures") else 0
            missing, permanent = self.conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(permanent), 0) FROM crawl_figure_failures"
            ).fetchone() if self._has_table("crawl_figure_failures") else (0, 0)
        return {"articles_failed": failed, "figures_missing": missing,
                "figures_missing_permanent": permanent}


def _column_type(name: str):
    if name in ("label", "area_px", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
                "touches_border"):
        return int
    if name in ("units", "shape"):
        return str
    return float


def _as_int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value)[:4]) if not isinstance(value, int) else value
    except ValueError:
        return None
