"""idx commands (see idx/cli.py)."""
from idx.cli import cli, emit, json_option  # noqa: F401


import click  # noqa: E402


@cli.command()
@click.option("--query", help="Search text (Europe PMC or arXiv query syntax).")
@click.option("--source", "source_name", type=click.Choice(["europepmc", "arxiv", "doi"]),
              help="Where to look [default: doi with --doi-file, else europepmc].")
@click.option("--doi-file", type=click.Path(dir_okay=False),
              help="Text file of DOIs, one a line (# comments allowed); for --source doi.")
@click.option("--max-articles", type=click.IntRange(min=1), help="Stop after this many new articles (stored or failed).")
@click.option("--db", "db_path", default="idx.db", show_default=True, type=click.Path(dir_okay=False),
              help="SQLite database the articles go to.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Folder of downloaded responses [default: $XDG_CACHE_HOME/idx/crawl].")
@click.option("--mailto", help="Your e-mail, sent to the services so they can contact you.")
@click.option("--rate", "rate_s", type=click.FloatRange(min=0),
              help="Minimum seconds between requests to one host [default: 1; arXiv: 3].")
@click.option("--all-figures", is_flag=True, help="Keep every figure, not only electron-microscopy ones.")
@click.option("--retry-failed", is_flag=True,
              help="Retry every missing figure of stored articles, permanent failures (404...) and those "
                   "given up after 3 runs included.")
@json_option
def crawl(query, source_name, doi_file, max_articles, db_path, cache_dir, mailto, rate_s, all_figures,
          retry_failed, as_json):
    """Download open-access articles and their EM figures into the database.

    Resumable: articles already in the database are skipped, and every response is cached in
    --cache, so re-running (after Ctrl-C, a crash or a failure) downloads nothing twice.
    Figure images that failed are retried by later runs (transient faults, up to 3 runs), or all
    of them with --retry-failed. ELSEVIER_API_KEY is used for Elsevier full text when set.

    \b
        idx crawl --query "gold nanoparticles TEM" --max-articles 50 --mailto me@example.org
        idx crawl --source arxiv --query "all:nanoparticle AND all:TEM"
        idx crawl --doi-file dois.txt --db particles.db
        idx crawl --doi-file dois.txt --db particles.db --retry-failed
    """
    import os
    from pathlib import Path

    from idx.db import Database
    from idx.errors import IdxError
    from miners.crawl import (ARXIV_MIN_INTERVAL_S, ArxivSource, DoiSource, EuropePMCSource, crawl as run_crawl,
                              read_doi_file)
    from miners.http import HttpClient

    source_name = source_name or ("doi" if doi_file else "europepmc")
    if source_name == "doi" and not doi_file:
        raise click.UsageError("--source doi needs --doi-file FILE (one DOI a line)")
    if source_name != "doi" and not query:
        raise click.UsageError(f"--source {source_name} needs --query TEXT")
    if rate_s is None:
        rate_s = ARXIV_MIN_INTERVAL_S if source_name == "arxiv" else 1.0
    cache_root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    client = HttpClient(cache_dir or Path(cache_root) / "idx" / "crawl", mailto=mailto, min_interval_s=rate_s)
    if source_name == "europepmc":
        source = EuropePMCSource(client, query)
    elif source_name == "arxiv":
        source = ArxivSource(client, query)
    else:
        source = DoiSource(client, read_doi_file(doi_file), mailto=mailto)
    database = Database(db_path)
    missing = [m for m in ("has_article", "add_article", "record_failure") if not hasattr(database, m)]
    if missing:
        raise IdxError(f"this idx.db.Database lacks {', '.join(missing)}; update idx to crawl into a database")
    try:
        report = run_crawl(source, database, max_articles=max_articles, all_figures=all_figures,
                           retry_failed=retry_failed,
                           progress=True)  # tqdm writes to stderr, --json output stays clean
    finally:
        if hasattr(database, "close"):
            database.close()
    summary = report.to_dict()
    max_lines = 20  # failure lines printed per kind; --json and the database have them all
    lines = [f"{summary['stored']} articles stored, {summary['retried']} revisited for missing figures "
             f"({summary['figures']} figures added, {summary['figures_failed']} figures failed), "
             f"{summary['skipped']} already in {db_path}, {summary['failed']} failed"]
    lines += [f"  {f['key']}: {f['reason']}" for f in summary["failures"][:max_lines]]
    if len(summary["failures"]) > max_lines:
        lines.append(f"  ... and {len(summary['failures']) - max_lines} more failed articles; list them with "
                     f"`idx query {db_path} --sql \"SELECT * FROM crawl_failures\"`")
    lines += [f"  {f['key']} {f['figure_id']}: {f['kind']}, "
              f"{'retried by the next crawl' if f['will_retry'] else 'not retried'} ({f['url']})"
              for f in summary["figure_failures"][:max_lines]]
    if len(summary["figure_failures"]) > max_lines:
        lines.append(f"  ... and {len(summary['figure_failures']) - max_lines} more failed figures; list them "
                     f"with `idx query {db_path} --sql \"SELECT * FROM crawl_figure_failures\"`")
    emit(summary, as_json, "\n".join(lines))
    if summary["failed"] and not (summary["stored"] or summary["retried"] or summary["skipped"]):
        # a script must see a crawl that got nothing (offline, a bad key) as a failure
        raise IdxError(f"all {summary['failed']} articles failed and nothing was stored; see the reasons "
                       "above, fix them (network, DOIs, API key) and run the same crawl again")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--base-url", help="URL the file was downloaded from; relative figure links resolve against it.")
@click.option("--figure-dir", type=click.Path(file_okay=False),
              help="PDFs: folder for the figure crops [default: <name>_figures beside the PDF].")
@click.option("--max-pages", type=click.IntRange(min=1), help="PDFs: scan at most this many pages [default: 60].")
@json_option
def article(file, base_url, figure_dir, max_pages, as_json):
    """Read an article (publisher HTML, JATS/Elsevier/Springer XML or PDF): metadata and figures.

    The format is detected from the content. Each figure gets "em": whether its caption
    describes electron micrographs.

    \b
        idx article srep01497.html --json
        idx article fulltext.xml --base-url https://europepmc.org/articles/PMC3460867/
        idx article paper.pdf --figure-dir crops/
    """
    from miners.articles import read
    from miners.articles.classify import score_em_caption

    result = read(file, base_url=base_url, figure_dir=figure_dir, max_pages=max_pages)
    payload = result.to_dict()
    lines = [f"{payload['title'] or '(no title)'}", f"doi: {payload['doi'] or '-'}  journal: "
             f"{payload['journal'] or '-'}  year: {payload['year'] or '-'}  format: {result.format}",
             f"{len(payload['figures'])} figures"]
    for figure in payload["figures"]:
        score = score_em_caption(figure["caption"])
        figure["em"] = score.is_em
        figure["em_techniques"] = score.techniques
        tag = "EM " + ",".join(score.techniques) if score.is_em else "-"
        lines.append(f"  {figure['label'] or figure['id']:<10} {tag:<16} {figure['caption'][:70]}")
        lines.append(f"  {'':<10} {figure['image'] or '(no image link)'}")
    emit(payload, as_json, "\n".join(lines))


@cli.command()
@click.argument("figure", type=click.Path(exists=True, dir_okay=False))
@click.option("--caption", help="Figure caption; each panel gets its sub-caption, technique and stated scale.")
@click.option("--insets", is_flag=True, help="Also list framed insets as panels.")
@click.option("--no-labels", is_flag=True, help="Do not read panel letters (no tesseract call).")
@json_option
def panels(figure, caption, insets, no_labels, as_json):
    """Split a figure into panels, read their letters and tell EM from the rest.

    \b
        idx panels fig2.png
        idx panels fig2.png --json --caption "(a) TEM image. (b) XRD pattern. Scale bar 50 nm."
    """
    from miners.images import load_image
    from miners.panels import split_panels

    image = load_image(figure)
    found = split_panels(image, read_labels=not no_labels, insets=insets)
    payload = {"figure": str(figure), "width_px": int(image.shape[1]), "height_px": int(image.shape[0]),
               "panels": [p.to_dict() for p in found]}
    if caption is not None:
        from idx.pipeline import assign_caption_labels
        from miners.captions import describe_panels, split_caption

        parts = split_caption(caption)
        shared = parts.get(None)
        assign_caption_labels(payload["panels"], [k for k in parts if k])  # as `idx extract` does
        described = describe_panels(caption, [entry["label"] for entry in payload["panels"]])
        for entry in payload["panels"]:
            entry["caption"] = described.get(entry["label"]) if entry["label"] else None
        payload["caption_shared"] = shared.to_dict() if shared else None
    lines = [f"{figure}: {len(found)} panel(s)"]
    for entry in payload["panels"]:
        x0, y0, x1, y1 = entry["bbox"]
        line = (f"  {entry['label'] or '?':>3}  {entry['kind']:<5} em_score {entry['em_score']:.2f}  "
                f"x {x0}-{x1}  y {y0}-{y1}" + ("  (inset)" if entry.get("inset") else ""))
        sub = entry.get("caption")
        if sub:
            scale = f"{sub['scale'][0]:g} {sub['scale'][1]}" if sub["scale"] else "no scale"
            line += f"  [{sub['technique'] or '-'}, {scale}] {sub['text'][:60]}"
        lines.append(line)
    emit(payload, as_json, "\n".join(lines))


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--caption", help="The figure's caption: its stated scale ('Scale bar, 50 nm') is used "
              "when the bar's label cannot be read, as `idx extract` does.")
@json_option
def scalebar(image, caption, as_json):
    """Find and read the scale bar of one micrograph.

    \b
        idx scalebar fig2b.png --json
        idx scalebar fig2b.png --caption "TEM image of Au nanorods. Scale bar, 50 nm."
    """
    from miners.captions import split_caption
    from miners.images import load_image
    from miners.scalebar import find_bar_candidates, read_scalebar

    array = load_image(image)
    shared = split_caption(caption).get(None) if caption else None
    stated = shared.scale if shared is not None else None
    result = read_scalebar(array, caption_scale=stated).to_dict()
    if result["found"]:
        text = (f"{result['value']:g} {result['unit']} = {result['bar_px']:.1f} px -> "
                f"{result['nm_per_px']:.4g} nm/px (source: {result['source']}, "
                f"confidence {result['confidence']:.2f})")
    else:
        bars = [bar for bar in find_bar_candidates(array) if bar["score"] >= 0.5]
        result["unread_bar_px"] = bars[0]["length_px"] if bars else None
        text = "no scale bar found" if not bars else (
            f"a bar of {bars[0]['length_px']:.1f} px was found but its label could not be read"
            + ("" if stated else "; give the caption's scale with --caption (e.g. \"Scale bar, 50 nm.\")"))
    emit(result, as_json, text=text)
