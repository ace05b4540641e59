"""The ``idx`` command line: a thin click layer over the Python API.

Commands live in ``cli_models`` (segment, train, evaluate), ``cli_miners`` (panels, scalebar,
article, crawl) and ``cli_db`` (extract, query, stats, plot, serve, demo); they register on
the group defined here. Heavy imports (torch) happen inside the commands, so ``idx --help`` stays
instant.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
from pathlib import Path

import click

from idx.errors import IdxError


class Interrupted(click.ClickException):
    """Ctrl-C: one line, and the shell's exit status for SIGINT (128 + 2), as ``python -m`` gives."""

    exit_code = 130


class IdxGroup(click.Group):
    """Click group that turns an ``IdxError``, or a file the system refuses (an output folder that
    cannot be written, a full disk, a path through a file), into a one-line ``Error: ...`` and exit
    status 1 (``-vv`` keeps the traceback of the latter)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IdxError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted; everything stored so far is kept") from None
        except OSError as exc:
            message = file_error(exc)
            if message is None or logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(message) from None


def file_error(exc: OSError) -> str | None:
    """One line for an ``OSError`` about a file or the disk, or ``None`` for any other."""
    strerror = (exc.strerror or str(exc)).lower()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{strerror}{where}; free some space or write elsewhere"
    if exc.filename is None:
        return None
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write or read {exc.filename} ({strerror}); choose a location you may "
                "write, or fix its permissions")
    return f"{exc.filename}: {strerror}; check the path"


def json_option(func):
    """``--json``: write one JSON document to stdout instead of a human-readable summary."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (which pass its bounds)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def segmenter_options(func):
    """The options of every command that segments: ``--mc-samples``, ``--tu``, ``--no-filter``,
    ``--no-tta``, ``--min-size``, ``--zoom``, ``--no-snap``, ``--smooth``, ``--compile/--no-compile``,
    ``--weights``, ``--device``."""
    func = click.option("--mc-samples", default=30, show_default=True, type=click.IntRange(1, 1000),
                        help="Monte-Carlo dropout samples T (1: dropout off, and no false-positive filter).")(func)
    func = click.option("--tu", default=None, type=FiniteFloat(min=0.0),
                        help="Use the published uncertainty filter with this t_u (mean MI, nats) instead of "
                        "the learned instance filter shipped with the weights.")(func)
    func = click.option("--no-filter", is_flag=True,
                        help="Keep every instance (no learned or uncertainty filter).")(func)
    func = click.option("--no-tta", is_flag=True,
                        help="Plain Monte-Carlo samples without flipped / transposed views (the shipped "
                        "filter was tuned with them).")(func)
    func = click.option("--min-size", type=click.IntRange(1), default=None,
                        help="Smallest particle kept, in pixels of the 512 x 512 working image "
                        "(default: the weights' card, the size each filter was tuned with; 16 for the "
                        "shipped weights, with or without --tu). Lower it for small particles in a large "
                        "field.")(func)
    func = click.option("--zoom", type=click.Choice(["auto", "1", "2"]), default="auto", show_default=True,
                        callback=lambda ctx, param, value: None if value == "auto" else int(value),
                        help="Segment at 2x the 512 x 512 working size (2), not (1), or where a first "
                        "quick pass finds small particles (auto: the weights' card's rule; 1 with "
                        "--tu). 2 costs ~6x the time.")(func)
    func = click.option("--no-snap", is_flag=True,
                        help="Keep the network's masks: no snapping of each particle's one-pixel rim "
                        "to the micrograph's edge (the weights' card's edge_alpha).")(func)
    func = click.option("--smooth", type=FiniteFloat(min=0.0), default=None, metavar="SIGMA",
                        help="Blur the micrograph the network sees with a Gaussian of this sigma (pixels of "
                        "the 512 x 512 working image); measurements still use the sharp image. For finely "
                        "textured particles (mesoporous silica) that the overlay shows missed: try 0.5. "
                        "Off by default.")(func)
    func = click.option("--compile/--no-compile", "compile_kernels", default=True, show_default=True,
                        help="CPU: run the network as traced graphs fused by oneDNN Graph (conv + ELU "
                        "in one pass; ~1.4 s less per image at T = 30 on 2 cores, after a ~2 s trace "
                        "on the first image).")(func)
    func = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                        help="BPartIS state dict (ours, or the published seg-model.pt).")(func)
    return click.option("--device", default="cpu", show_default=True,
                        type=click.Choice(["cpu", "cuda"]))(func)


def check_output(path, option: str) -> None:
    """Refuse, before any work, an output file whose folder is missing or cannot be written."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise IdxError(f"{option} {path}: its folder does not exist; create it or give another path")
    if not os.access(folder, os.W_OK):
        raise IdxError(f"{option} {path}: its folder cannot be written; give another path")


def emit(payload, as_json: bool, text: str | None = None) -> None:
    """Print ``payload`` as JSON (``as_json``) or ``text`` / a readable rendering of it."""
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=_json_default))
    elif text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(payload, indent=2, default=_json_default))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


@click.group(cls=IdxGroup)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.version_option(package_name="idx")
def cli(verbose):
    """idx: electron-microscopy figures -> a database of particle measurements."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def main():
    cli()


# Command modules register themselves on ``cli`` when imported.
from idx import cli_db, cli_miners, cli_models  # noqa: E402,F401
