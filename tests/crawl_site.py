"""Hand-made Europe PMC / Crossref / Elsevier / arXiv responses around the real fixture articles.

``build_site(server)`` registers, on a :class:`replay_server.ReplayServer`:

- ``/europepmc/rest/search``: two pages (cursorMark ``*`` then ``p2``) listing PMC3460867 and
  PMC3166277 (the real JATS fixtures), a result without PMCID, one with a hostile PMCID, and with ``broken=True`` PMC9999999
  whose full text always answers 500;
- ``/europepmc/rest/{PMCID}/fullTextXML`` and the figure JPEGs under ``/europepmc/articles/{PMCID}/bin/``;
- ``/arxiv/api/query`` (Atom, paged by ``start``) and ``/arxiv/pdf/{id}`` one-page PDFs made with
  reportlab (the second entry has no PDF link, so the crawler falls back to the PDF root);
- ``/crossref/works/{doi}`` for 10.1038/srep01497 (XML-less, with an HTML link), 10.1038/ncomms1737
  (only a landing page that redirects through ``/doi/``) and 10.1016/j.jnoncrysol.2017.07.006
  (Elsevier), the Nature pages with their media host pointed at the server, the Elsevier API
  full text and every figure image the reader finds in them.

Figure routes are derived by reading each served document with ``miners.articles.read``, so they
are exactly the URLs the crawler will ask for.
"""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from miners.articles import read

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "articles"
JATS = {"PMC3460867": FIXTURES / "jats" / "pone.0046493.nxml",
        "PMC3166277": FIXTURES / "jats" / "1471-2180-11-174.nxml"}
NATURE = {"10.1038/srep01497": FIXTURES / "nature" / "srep01497.html",
          "10.1038/ncomms1737": FIXTURES / "nature" / "ncomms1737.html"}
ELSEVIER_DOI = "10.1016/j.jnoncrysol.2017.07.006"
ELSEVIER_XML = FIXTURES / "elsevier" / "j.jnoncrysol.2017.07.006.xml"


def jpeg_bytes(seed: int, side: int = 48) -> bytes:
    """A small distinct JPEG (noise seeded by ``seed``)."""
    image = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


class Site:
    """URLs of the fake services and the figure paths registered."""

    def __init__(self, server):
        self.server = server
        self.europepmc_url = server.url("/europepmc/rest")
        self.europepmc_images_url = server.url("/europepmc/articles")
        self.crossref_url = server.url("/crossref")
        self.doi_url = server.url("/doi")
        self.elsevier_url = server.url("/elsevier")
        self.arxiv_url = server.url("/arxiv/api/query")
        self.figure_paths: dict[str, list[str]] = {}

    def add_figures(self, key: str, urls) -> None:
        paths = []
        for url in urls:
            path = url.split(self.server.host, 1)[1].split("?", 1)[0]
            self.server.add(path, jpeg_bytes(len(self.server.routes)), "image/jpeg")
            paths.append(path)
        self.figure_paths[key] = paths


_PLACEHOLDER = "127.0.0.1:1"


@functools.lru_cache(maxsize=None)
def _figure_urls(path: Path, base_url: str | None, media: bool = False) -> tuple:
    """Figure image URLs the reader finds in a fixture served from the placeholder host (memoised)."""
    data = path.read_bytes()
    if media:
        data = data.replace(b"//media.springernature.com", f"http://{_PLACEHOLDER}/media".encode())
    return tuple(f.image for f in read(data, base_url=base_url).figures if f.image)


def _on(server, urls) -> list[str]:
    return [url.replace(f"{_PLACEHOLDER}/", f"{server.host}/") for url in urls]


def pdf_bytes(title: str, caption: str, seed: int) -> bytes:
    """A one-page article PDF (reportlab): title, one embedded micrograph-like image, its caption."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, invariant=1)
    page.setTitle(title)
    page.setFont("Helvetica-Bold", 14)
    page.drawString(72, 780, title)
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (200, 300), dtype=np.uint8))
    page.drawImage(ImageReader(image), 72, 450, width=300, height=200)
    page.setFont("Helvetica", 9)
    page.drawString(72, 435, caption)
    page.drawString(72, 400, "Particle sizes were measured on several hundred particles per sample.")
    page.showPage()
    page.save()
    return buffer.getvalue()


ARXIV_ENTRIES = [
    ("2101.00001v2", "Gold nanoparticles on porous silica", "Figure 1. TEM image of gold nanoparticles. "
     "Scale bar, 50 nm.", "10.5555/arxiv.one", True),
    ("2101.00002v1", "Iron oxide nanocubes", "Figure 1. SEM micrograph of iron oxide nanocubes on silicon.",
     None, False),
]


def _arxiv_feed(server, query: dict) -> bytes:
    start, count = int(query.get("start", 0)), int(query.get("max_results", 10))
    entries = []
    for arxiv_id, title, _, doi, pdf_link in ARXIV_ENTRIES[start:start + count]:
        link = (f'<link title="pdf" href="{server.url("/arxiv/pdf/" + arxiv_id)}" rel="related" '
                'type="application/pdf"/>') if pdf_link else ""
        entries.append(f"""<entry><id>http://arxiv.org/abs/{arxiv_id}</id>
<published>2021-01-01T00:00:00Z</published><title>{title}</title>
<author><name>Ada  Lovelace</name></author><author><name>Ernst Ruska</name></author>
<link href="http://arxiv.org/abs/{arxiv_id}" rel="alternate" type="text/html"/>{link}
{f'<arxiv:doi>{doi}</arxiv:doi>' if doi else ''}</entry>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom"
 xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
<title>arXiv Query</title><opensearch:totalResults>{len(ARXIV_ENTRIES)}</opensearch:totalResults>
<opensearch:startIndex>{start}</opensearch:startIndex>{''.join(entries)}</feed>""".encode()


def _search_page(results: list[dict], cursor: str) -> bytes:
    return json.dumps({"version": "6.9", "hitCount": 4, "nextCursorMark": cursor,
                       "resultList": {"result": results}}).encode()


def build_site(server, broken: bool = False) -> Site:
    site = Site(server)
    lite = [{"id": "23029536", "source": "MED", "pmid": "23029536", "pmcid": "PMC3460867",
             "doi": "10.1371/journal.pone.0046493", "title": "MmPPOX inhibits lipolytic enzymes",
             "journalTitle": "PLoS One", "pubYear": "2012", "isOpenAccess": "Y"},
            {"id": "PPR12345", "source": "PPR", "title": "A preprint without full text", "isOpenAccess": "N"},
            {"id": "666", "source": "MED", "pmcid": "PMC1/../../../../etc/passwd", "isOpenAccess": "Y"},
            {"id": "21810267", "source": "MED", "pmid": "21810267", "pmcid": "PMC3166277",
             "doi": "10.1186/1471-2180-11-174", "title": "Stochasticity of lysis time",
             "journalTitle": "BMC Microbiol", "pubYear": "2011", "isOpenAccess": "Y"}]
    if broken:
        lite.append({"id": "99999999", "source": "MED", "pmcid": "PMC9999999", "doi": "10.9999/broken",
                     "isOpenAccess": "Y"})
        server.add("/europepmc/rest/PMC9999999/fullTextXML", b"", "application/xml", fault="status",
                   fault_status=500)
    pages = {"*": _search_page(lite[:3], "p2"), "p2": _search_page(lite[3:], "p3"), "p3": _search_page([], "p3")}
    server.add("/europepmc/rest/search", lambda q: pages[q.get("cursorMark", "*")], "application/json")
    for pmcid, path in JATS.items():
        data = path.read_bytes()
        server.add(f"/europepmc/rest/{pmcid}/fullTextXML", data, "application/xml;charset=UTF-8")
        urls = _figure_urls(path, f"http://{_PLACEHOLDER}/europepmc/articles/{pmcid}/bin/")
        site.add_figures(f"pmcid:{pmcid}", _on(server, urls))

    media = f"http://{server.host}/media"
    for doi, path in NATURE.items():
        name = doi.split("/")[1]
        html = path.read_bytes().replace(b"//media.springernature.com", media.encode())
        page = f"/nature/articles/{name}"
        server.add(page, html, "text/html; charset=utf-8")
        urls = _figure_urls(path, f"http://{_PLACEHOLDER}{page}", media=True)
        site.add_figures(f"doi:{doi}", _on(server, urls))
    server.add("/doi/10.1038/ncomms1737", b"", "text/plain", fault="redirect",
               location="/nature/articles/ncomms1737")
    crossref = {
        "10.1038/srep01497": {"DOI": "10.1038/srep01497", "title": ["Shape-controlled nanoparticles"],
                              "container-title": ["Scientific Reports"],
                              "issued": {"date-parts": [[2013, 4, 2]]},
                              "license": [{"URL": "http://creativecommons.org/licenses/by-nc-nd/3.0/"}],
                              "link": [{"URL": server.url("/nature/articles/srep01497"),
                                        "content-type": "text/html", "intended-application": "text-mining"}],
                              "resource": {"primary": {"URL": server.url("/nature/articles/srep01497")}}},
        "10.1038/ncomms1737": {"DOI": "10.1038/ncomms1737", "container-title": ["Nature Communications"],
                               "resource": {"primary": {"URL": server.url("/doi/10.1038/ncomms1737")}}},
        ELSEVIER_DOI: {"DOI": ELSEVIER_DOI, "container-title": ["Journal of Non-Crystalline Solids"],
                       "link": [{"URL": "https://api.elsevier.com/content/article/PII:S0022309317303496"
                                        "?httpAccept=text/xml", "content-type": "text/xml",
                                 "intended-application": "text-mining"}]},
    }
    for doi, message in crossref.items():
        body = json.dumps({"status": "ok", "message-type": "work", "message": message}).encode()
        server.add(f"/crossref/works/{doi}", body, "application/json")
    server.add("/arxiv/api/query", lambda q: _arxiv_feed(server, q), "application/atom+xml; charset=utf-8")
    for seed, (arxiv_id, title, caption, _, _) in enumerate(ARXIV_ENTRIES):
        server.add(f"/arxiv/pdf/{arxiv_id}", pdf_bytes(title, caption, seed), "application/pdf")
    site.arxiv_pdf_url = server.url("/arxiv/pdf")
    xml = ELSEVIER_XML.read_bytes()
    server.add(f"/elsevier/content/article/doi/{ELSEVIER_DOI}", xml, "text/xml")
    site.add_figures(f"doi:{ELSEVIER_DOI}", [url.replace("https://api.elsevier.com", site.elsevier_url)
                                            for url in _figure_urls(ELSEVIER_XML, None)])
    return site


THREE_FIGURE_CAPTIONS = ("TEM image of gold nanoparticles. Scale bar, 50 nm.",
                         "SEM micrograph of silver nanocubes on silicon.",
                         "HRTEM image of a single particle showing lattice fringes.")


def three_figure_jats(pmcid: str) -> bytes:
    """A minimal JATS article with three electron-micrograph figures (``fig1`` .. ``fig3``)."""
    figures = "".join(
        f'<fig id="fig{n}"><label>Figure {n}</label><caption><p>{caption}</p></caption>'
        f'<graphic xlink:href="{pmcid}-{n}"/></fig>' for n, caption in enumerate(THREE_FIGURE_CAPTIONS, 1))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">
<front><journal-meta><journal-title-group><journal-title>Test Nano</journal-title></journal-title-group>
</journal-meta><article-meta><article-id pub-id-type="doi">10.5555/{pmcid.lower()}</article-id>
<article-id pub-id-type="pmc">{pmcid[3:]}</article-id>
<title-group><article-title>Three micrographs of {pmcid}</article-title></title-group>
<pub-date><year>2020</year></pub-date></article-meta></front>
<body><sec><p>Nanoparticles were imaged by electron microscopy.</p>{figures}</sec></body></article>""".encode()


def build_three_figure_site(server, pmcids=("PMC1000001", "PMC1000002")) -> Site:
    """A one-page Europe PMC search under ``/epmc3`` listing ``pmcids`` (with their DOIs
    ``10.5555/{pmcid lower case}``), each a JATS article with three EM figures served as JPEGs at
    ``/epmc3/articles/{PMCID}/bin/{PMCID}-{n}.jpg``.

    Use ``site.europepmc_url`` / ``site.europepmc_images_url`` (they point at ``/epmc3``), and
    ``site.figure_paths["pmcid:PMC..."]`` (three paths, figure 1 to 3) to inject faults.
    """
    site = Site(server)
    site.europepmc_url = server.url("/epmc3/rest")
    site.europepmc_images_url = server.url("/epmc3/articles")
    results = [{"id": pmcid, "source": "PMC", "pmcid": pmcid, "doi": f"10.5555/{pmcid.lower()}",
                "title": f"Three micrographs of {pmcid}", "journalTitle": "Test Nano", "pubYear": "2020",
                "isOpenAccess": "Y"} for pmcid in pmcids]
    page = json.dumps({"version": "6.9", "hitCount": len(results), "nextCursorMark": "*",
                       "resultList": {"result": results}}).encode()
    server.add("/epmc3/rest/search", page, "application/json")
    for pmcid in pmcids:
        server.add(f"/epmc3/rest/{pmcid}/fullTextXML", three_figure_jats(pmcid), "application/xml")
        site.add_figures(f"pmcid:{pmcid}", [server.url(f"/epmc3/articles/{pmcid}/bin/{pmcid}-{n}.jpg")
                                            for n in range(1, 4)])
    return site
