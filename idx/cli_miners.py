"""idx commands (see idx/cli.py)."""
from idx.cli import cli, emit, json_option  # noqa: F401


import click  # noqa: E402


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
