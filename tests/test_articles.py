"""Tests of miners.articles: real publisher documents, synthetic PDFs, bad input, EM captions."""
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from idx.cli import cli
from idx.errors import ArticleError
from miners.articles import detect_format, read
from miners.articles.classify import is_em_caption, score_em_caption
from miners.articles.pdf import find_captions, page_lines

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "articles"
EMPS = SHARED / "data" / "emps" / "images"
EXPECTED = json.loads((Path(__file__).parent / "data" / "articles_expected.json").read_text("utf-8"))["documents"]
BBOX_TOL_PT = 3.0

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures/articles not found")
needs_emps = pytest.mark.skipif(not EMPS.is_dir(), reason="shared/data/emps not found")


# ------------------------------------------------------------------------------ real documents
@needs_fixtures
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_matches_expected(name):
    expected = EXPECTED[name]
    article = read(FIXTURES / name)
    got = article.to_dict()
    assert article.format == expected["format"]
    for key in ("doi", "title", "journal", "year", "authors", "license"):
        assert got[key] == expected[key], key
    assert len(got["figures"]) == len(expected["figures"])
    for fig, want in zip(got["figures"], expected["figures"]):
        assert fig["label"] == want["label"]
        assert fig["caption"] == want["caption"]
        assert fig["image"] == want["image"]
        assert fig["image"].startswith("https://") or fig["image"].startswith("http://pubs.rsc.org/")


@needs_fixtures
def test_read_bytes_equals_read_path_and_ignores_file_name(tmp_path):
    source = FIXTURES / "jats" / "pone.0046493.nxml"
    renamed = tmp_path / "download.pdf"  # wrong extension: the content decides
    renamed.write_bytes(source.read_bytes())
    assert read(source.read_bytes()).to_dict() == read(source).to_dict() == read(renamed).to_dict()


@needs_fixtures
def test_detect_format_from_content():
    kinds = {name: detect_format((FIXTURES / name).read_bytes()) for name in EXPECTED}
    assert kinds["rsc/test_paper.html"] == "html"  # XHTML starting with <?xml
    assert kinds["jats/pone.0046493.nxml"] == "jats"
    assert kinds["springer/spr_test1.xml"] == "springer-xml"
    assert kinds["elsevier/j.jnoncrysol.2017.07.006.xml"] == "elsevier-xml"
    assert detect_format(b"  %PDF-1.7\n...") == "pdf"


@needs_fixtures
def test_base_url_resolves_relative_links():
    data = (FIXTURES / "jats" / "1471-2180-11-174.nxml").read_bytes()
    article = read(data, base_url="https://mirror.example.org/pmc/PMC3166277/")
    assert article.figures[0].image == "https://mirror.example.org/pmc/PMC3166277/1471-2180-11-174-1.jpg"
    # An API endpoint is not a page: the standard Europe PMC figure folder is used instead.
    api = read(data, base_url="https://www.ebi.ac.uk/europepmc/webservices/rest/PMC3166277/fullTextXML")
    assert api.figures[0].image == "https://europepmc.org/articles/PMC3166277/bin/1471-2180-11-174-1.jpg"
    html = (FIXTURES / "rsc" / "test_paper.html").read_bytes()
    mirrored = read(html, base_url="https://rsc.example.net/en/content/articlehtml/2017/ta/c7ta06843c")
    assert mirrored.figures[1].image.startswith("https://rsc.example.net/services/images/")
    assert mirrored.figures[1].image.endswith("c7ta06843c-f1_hi-res.gif")


def test_em_classifier_on_real_captions():
    labels = {name: [f["label"] for f in doc["figures"] if is_em_caption(f["caption"])]
              for name, doc in EXPECTED.items()}
    assert labels["nature/srep01497.html"] == ["Figure 2", "Figure 3"]
    assert labels["rsc/test_paper.html"] == ["Fig. 1", "Fig. 2"]
    assert labels["jats/pone.0046493.nxml"] == []  # SDS-PAGE, growth curves
    assert labels["acs/acs.jmedchem.6b00723.html"] == []


# ----------------------------------------------------------------------- publisher HTML markup
SCIENCEDIRECT_HTML = b"""<!DOCTYPE html><html><head>
<meta name="citation_doi" content="10.1016/j.actamat.2020.01.001">
<meta name="citation_title" content="Grain growth in nanocrystalline nickel">
<meta name="citation_journal_title" content="Acta Materialia">
<meta name="citation_publication_date" content="2020/03/01">
<meta name="citation_author" content="Smith, Jane"><meta name="citation_author" content="Doe, J. R.">
</head><body><figure class="figure text-xs" id="f0010"><span>
<img src="https://ars.els-cdn.com/content/image/1-s2.0-S1359645420300011-gr2.jpg" alt="Fig. 2"></span>
<span class="captions"><span id="cap0010"><p><span class="label">Fig. 2</span>. (a) Bright-field TEM image
 of the as-deposited film; (b) SEM micrograph after annealing.</p></span></span>
<a class="anchor download-link" href="https://ars.els-cdn.com/content/image/1-s2.0-S1359645420300011-gr2_lrg.jpg"
 title="Download high-res image (512KB)">Download : Download high-res image (512KB)</a></figure>
</body></html>"""

WILEY_HTML = b"""<html><head><link rel="canonical" href="https://onlinelibrary.wiley.com/doi/full/10.1002/smll.201700001">
<meta name="citation_doi" content="10.1002/smll.201700001"><meta name="citation_title" content="Hollow spheres">
</head><body><figure class="figure" id="smll201700001-fig-0001"><picture>
<img class="figure__image" src="/cms/asset/abc/smll201700001-fig-0001-m.jpg"
 data-lg-src="/cms/asset/abc/smll201700001-fig-0001-m.png"></picture>
<figcaption class="figure__caption"><div class="figure__caption-text"><strong class="figure__title">Figure 1</strong>
a) HRTEM image of a hollow sphere. b) Size distribution.</div></figcaption></figure></body></html>"""


def test_sciencedirect_html_takes_high_res_link_and_authors():
    article = read(SCIENCEDIRECT_HTML)
    assert article.format == "html-elsevier"
    assert article.authors == ["Jane Smith", "J. R. Doe"]
    assert article.year == 2020
    (figure,) = article.figures
    assert figure.label == "Fig. 2"
    assert figure.caption == "(a) Bright-field TEM image of the as-deposited film; (b) SEM micrograph after annealing."
    assert figure.image == "https://ars.els-cdn.com/content/image/1-s2.0-S1359645420300011-gr2_lrg.jpg"


def test_wiley_html_resolves_large_image_against_canonical():
    (figure,) = read(WILEY_HTML).figures
    assert figure.label == "Figure 1"
    assert figure.caption == "a) HRTEM image of a hollow sphere. b) Size distribution."
    assert figure.image == "https://onlinelibrary.wiley.com/cms/asset/abc/smll201700001-fig-0001-m.png"


def test_html_without_figures_gives_empty_article():
    article = read(b"<html><head><title>Editorial note</title></head><body><p>No figures.</p></body></html>")
    assert article.title == "Editorial note"
    assert article.figures == [] and article.to_dict()["figures"] == []


def test_non_utf8_html_is_read():
    page = ('<html><head><meta charset="windows-1252"><meta name="citation_title" content="Caf\u00e9 '
            'nanoparticles"></head><body><figure><img src="f1.png"><figcaption>Figure 1. SEM image \u2013 '
            'overview</figcaption></figure></body></html>').encode("cp1252")
    article = read(page, base_url="https://example.org/a/")
    assert article.title == "Caf\u00e9 nanoparticles"
    assert article.figures[0].caption == "SEM image \u2013 overview"
    assert article.figures[0].image == "https://example.org/a/f1.png"


@pytest.mark.parametrize("pad", [0, 1])
def test_a_non_utf8_page_is_read_whatever_its_length(pad):
    """An even number of bytes "decoded" as UTF-16 garbage, so the page was refused as not HTML."""
    page = ('<html><head><meta charset="windows-1252"><meta name="citation_title" content="Caf\u00e9 '
            'nanoparticles"></head><body><figure><img src="f1.png"><figcaption>Figure 1. SEM image \u2013 '
            'overview</figcaption></figure></body></html>' + " " * pad).encode("cp1252")
    assert read(page, base_url="https://example.org/a/").title == "Caf\u00e9 nanoparticles"


def test_detection_survives_a_utf8_character_cut_by_the_sample_and_latin1_xml():
    page = (FIXTURES / "nature" / "srep01497.html").read_bytes()
    cut = 65536 - 1  # put the first byte of a 3-byte "\u2013" on the sample's last byte
    shifted = page[:200] + b" " * (cut - 200 - page[200:].index(b"\xe2\x80\x93")) + page[200:]
    assert shifted[cut:cut + 3] == b"\xe2\x80\x93"
    assert detect_format(shifted) == "html"
    jats = (FIXTURES / "jats" / "1471-2180-11-174.nxml").read_text(encoding="utf-8")
    data = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + jats).encode("latin-1", errors="replace")
    if len(data) % 2:
        data += b" "
    assert read(data).doi == "10.1186/1471-2180-11-174"


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"   \n\t ", "empty"),
    (bytes(range(256)) * 40, "binary"),
    (b"<?xml version='1.0'?><article><front><article-meta><title-group>", "malformed XML"),
    (b"<?xml version='1.0'?><catalog><book/></catalog>", "neither JATS"),
    (b"just some plain text, not an article", "not HTML, XML or PDF"),
], ids=["empty", "whitespace", "binary", "malformed-xml", "unknown-xml", "plain-text"])
def test_bad_input_gives_one_line_article_error(data, message):
    with pytest.raises(ArticleError, match=message) as info:
        read(data)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ArticleError, match="no such file"):
        read(tmp_path / "nope.html")
    with pytest.raises(ArticleError, match="is a folder"):
        read(tmp_path)
    with pytest.raises(ArticleError, match="path or bytes"):
        read(12)


# ----------------------------------------------------------------------------------------- PDF
@pytest.fixture(scope="module")
def synthetic_pdf(tmp_path_factory):
    from miners.pdf_synth import make_article_pdf

    folder = tmp_path_factory.mktemp("pdf")
    path = folder / "article.pdf"
    truth = make_article_pdf(path, EMPS)
    article = read(path)
    return path, truth, article


@needs_emps
def test_pdf_metadata_and_captions(synthetic_pdf):
    _, truth, article = synthetic_pdf
    assert article.format == "pdf"
    assert article.doi == truth["doi"]
    assert article.title == truth["title"]
    assert article.authors == truth["authors"]
    assert article.year == 2024
    assert [f.label for f in article.figures] == [f["label"] for f in truth["figures"]]
    assert [f.caption for f in article.figures] == [f["caption"] for f in truth["figures"]]
    assert [f.page for f in article.figures] == [1, 2, 3, 4]


@needs_emps
def test_pdf_figure_regions_and_crops(synthetic_pdf):
    path, truth, article = synthetic_pdf
    for figure, want in zip(article.figures, truth["figures"]):
        np.testing.assert_allclose(figure.bbox, want["bbox"], atol=BBOX_TOL_PT, err_msg=figure.label)
        crop = Path(figure.image)
        assert crop.is_absolute() and crop.parent == path.with_name("article_figures").resolve()
        width_px, height_px = Image.open(crop).size
        x0, top, x1, bottom = want["bbox"]
        # The crop keeps the figure's aspect ratio (within the bbox tolerance).
        assert abs(width_px / height_px - (x1 - x0) / (bottom - top)) < 0.05 * (x1 - x0) / (bottom - top)
        assert crop.name == crop.name.lower() and len(crop.stem) == 16  # named by content hash
    # Native resolution: Fig. 1 embeds a 512 px wide micrograph; its crop is as wide.
    assert abs(Image.open(article.figures[0].image).size[0] - 512) <= 3


@needs_emps
def test_pdf_side_by_side_images_are_one_figure(synthetic_pdf):
    _, truth, article = synthetic_pdf
    figure = article.figures[1]
    assert figure.label == "Fig. 2"
    width_px, height_px = Image.open(figure.image).size
    assert width_px > 3.5 * height_px  # three panels side by side, in one crop
    assert len([f for f in article.figures if f.page == 2]) == 1


@needs_emps
def test_pdf_inline_reference_is_not_a_caption(synthetic_pdf):
    import pdfplumber

    path, _, _ = synthetic_pdf
    with pdfplumber.open(path) as pdf:
        page = pdf.pages[1]
        lines = page_lines(page)
        labels = [c["label"] for c in find_captions(lines, float(page.width))]
    assert any(line["text"].startswith("Fig. 2 shows") for line in lines)
    assert labels == ["Fig. 2"]


@needs_emps
def test_pdf_scanned_page_figure_comes_from_rendered_region(synthetic_pdf):
    _, truth, article = synthetic_pdf
    figure = article.figures[2]
    crop = np.asarray(Image.open(figure.image).convert("L"), dtype=float)
    # The body text above and the caption below are outside the crop: no near-white rows of paper.
    assert (crop > 235).mean(axis=1).max() < 0.9
    assert score_em_caption(figure.caption).techniques == ["TEM"]


@needs_emps
def test_pdf_figure_dir_and_repeat_reads_reuse_files(synthetic_pdf, tmp_path):
    path, _, article = synthetic_pdf
    again = read(path.read_bytes(), figure_dir=tmp_path / "crops", max_pages=2)  # pages 1-2 keep it fast
    assert [Path(f.image).name for f in again.figures] == [Path(f.image).name for f in article.figures[:2]]
    assert all(Path(f.image).parent == (tmp_path / "crops").resolve() for f in again.figures)


def test_encrypted_pdf(tmp_path):
    from miners.pdf_synth import make_encrypted_pdf

    with pytest.raises(ArticleError, match="encrypted with a password"):
        read(make_encrypted_pdf(tmp_path / "locked.pdf"))


def test_truncated_pdf(tmp_path):
    from miners.pdf_synth import make_long_pdf, make_truncated_pdf

    whole = make_long_pdf(tmp_path / "whole.pdf", n_pages=6)
    cut = make_truncated_pdf(tmp_path / "cut.pdf", whole, keep=0.4)
    with pytest.raises(ArticleError, match="broken or truncated PDF"):
        read(cut)
    with pytest.raises(ArticleError, match="broken or truncated PDF"):
        read(b"%PDF-1.4\n" + bytes(range(256)) * 4)


def test_long_pdf_is_capped_and_says_so(tmp_path, caplog):
    from miners.pdf_synth import make_long_pdf

    path = make_long_pdf(tmp_path / "thesis.pdf", n_pages=120)
    with caplog.at_level(logging.WARNING, logger="miners.articles.pdf"):
        article = read(path, max_pages=4)
    assert "scanning only the first 4 of 120 pages" in caplog.text
    assert article.figures == []
    with pytest.raises(ArticleError, match="max_pages must be at least 1"):
        read(path, max_pages=0)


# ------------------------------------------------------------------------------ EM classifier
@pytest.mark.parametrize("caption, techniques", [
    ("Fig. 2 (a) SEM image of Au nanoparticles on silica.", ["SEM"]),
    ("HRTEM micrograph showing the (111) lattice fringes", ["HRTEM"]),
    ("(a) HAADF-STEM image and (b) the corresponding EDS maps of Pt and Ni.", ["HAADF-STEM"]),
    ("Representative cryo-EM micrographs of the purified virions.", ["cryo-EM"]),
    ("FE-SEM images of the ZnO nanorod arrays grown for 2 h.", ["FE-SEM"]),
    ("Transmission electron micrographs of negatively stained liposomes.", ["TEM"]),
    ("Electron micrographs of infected cells at 24 h.", ["EM"]),
])
def test_em_captions(caption, techniques):
    result = score_em_caption(caption)
    assert result.is_em and is_em_caption(caption)
    assert result.techniques == techniques


@pytest.mark.parametrize("caption", [
    "Samples were drop-cast on a TEM grid and dried overnight.",
    "Cell viability after 24 h. Data are mean \u00b1 SEM (n = 3).",
    "Error bars represent the SEM of three independent experiments.",
    "XRD patterns of the calcined powders and XPS spectra of the Ni 2p region.",
    "SEM-EDS spectrum of the coating showing Ni, P and O peaks.",
    "Proliferation of embryonic stem cells on the scaffolds.",
    "",
])
def test_not_em_captions(caption):
    assert not is_em_caption(caption)


# ----------------------------------------------------------------------------------------- CLI
@needs_fixtures
def test_article_cli_json():
    result = CliRunner().invoke(cli, ["article", str(FIXTURES / "nature" / "srep01497.html"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["doi"] == "10.1038/srep01497" and len(payload["figures"]) == 4
    assert [f["em"] for f in payload["figures"]] == [False, True, True, False]


def test_article_cli_error_is_one_line(tmp_path):
    empty = tmp_path / "empty.html"
    empty.write_bytes(b"")
    result = CliRunner().invoke(cli, ["article", str(empty)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and "empty" in result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_emps
@pytest.mark.slow
def test_pdf_scan_without_text_layer_is_read_by_ocr(tmp_path):
    import shutil

    from miners.pdf_synth import make_article_pdf

    if shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed")
    truth = make_article_pdf(tmp_path / "scan.pdf", EMPS, scan_text_layer=False)
    article = read(tmp_path / "scan.pdf")
    figure = next(f for f in article.figures if f.page == 3)
    assert figure.label == "Fig. 3"
    assert score_em_caption(figure.caption).techniques == ["TEM"]
    np.testing.assert_allclose(figure.bbox, truth["figures"][2]["bbox"], atol=2 * BBOX_TOL_PT)


def test_ocr_caption_lines_of_uneven_box_heights_stay_one_caption():
    """Tesseract gives word-box heights, not font sizes: one caption's lines read 7.6, 9.0 and
    7.2 on a scanned page (measured); a text layer's sizes that far apart are a font change."""
    texts = ["Fig. 1 (a) TEM image of silica. (b) SEM image of colloidal",
             "spheres. (c) TEM image of gold nanocrystals. (d) Size distribution.",
             "Scale bars: 100 nm (a), 1 um (b), 200 nm (c)."]

    def lines(ocr):
        return [{"text": text, "x0": 50.0, "x1": 500.0, "top": 600.0 + 11 * k, "bottom": 608.0 + 11 * k,
                 "size": size, "bold": False, "ocr": ocr}
                for k, (text, size) in enumerate(zip(texts, (7.56, 9.0, 7.2)))]
    (scanned,) = find_captions(lines(ocr=True), page_width=600.0)
    assert scanned["caption"].endswith("200 nm (c).") and "(d) Size distribution" in scanned["caption"]
    (typeset,) = find_captions(lines(ocr=False), page_width=600.0)
    assert typeset["caption"].endswith("colloidal")


def test_html_saved_as_utf16_reads_as_its_utf8_original():
    path = FIXTURES / "nature" / "srep01497.html"
    original = read(path)
    for encoding in ("utf-16", "utf-8-sig"):
        again = read(path.read_bytes().decode("utf-8").encode(encoding))
        assert again.title == original.title and len(again.figures) == len(original.figures) > 0


def test_a_pdf_whose_first_page_has_only_low_text_is_read(tmp_path):
    """A footer (or a scan's last OCR line) alone on page 1 crashed the title search with
    ValueError: max() arg is an empty sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "footer.pdf"
    with PdfPages(path) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        fig.text(0.5, 0.03, "Page 1", ha="center", fontsize=9)
        pdf.savefig(fig)
        plt.close(fig)
    article = read(path, figure_dir=tmp_path / "figs")
    assert article.title is None and article.figures == []


@pytest.mark.parametrize("text, label", [("Fig. S1. HRTEM image of the wire tip.", "Fig. S1"),
                                         ("Supplementary Figure 3: TEM of the seeds.", "Supplementary Figure 3"),
                                         ("Scheme 1. Synthesis of the nanorods.", "Scheme 1"),
                                         ("Figure 2. SEM image of the film.", "Figure 2")])
def test_pdf_captions_of_supplementary_figures_and_schemes_are_found(text, label):
    """Supplementary-information PDFs label their figures "Fig. S1": none was found."""
    lines = [{"text": "Body text of the article goes on here.", "x0": 50.0, "x1": 500.0, "top": 100.0,
              "bottom": 110.0, "size": 10.0, "bold": False, "ocr": False},
             {"text": text, "x0": 50.0, "x1": 400.0, "top": 600.0, "bottom": 609.0, "size": 9.0,
              "bold": False, "ocr": False}]
    (caption,) = find_captions(lines, page_width=600.0)
    assert caption["label"] == label and caption["caption"] == text[len(label):].lstrip(".: ")


def test_numeric_superscripts_stay_exponents():
    """"at least 10<sup>4</sup> s" read "at least 104 s": a different number."""
    page = ('<html><head><meta name="citation_title" content="Retention"></head><body><figure>'
            '<img src="f1.png"><figcaption>Figure 1. Retention of at least 10<sup>4</sup> s at 0.8 MV '
            'cm<sup>\u22121</sup>; Fe<sup>3+</sup> ions; ref.<sup>a</sup> kept.</figcaption></figure></body></html>')
    caption = read(page.encode(), base_url="https://example.org/").figures[0].caption
    assert caption == "Retention of at least 10^4 s at 0.8 MV cm^\u22121; Fe^3+ ions; ref.a kept."
    jats = ('<article><front><article-meta><title-group><article-title>T</article-title></title-group>'
            '</article-meta></front><body><fig id="F1"><label>Figure 1</label><caption><p>Fit '
            '(x - 3)<sup>2</sup> of 10<sup>3</sup> particles.</p></caption><graphic xmlns:xlink='
            '"http://www.w3.org/1999/xlink" xlink:href="f1"/></fig></body></article>')
    assert read(jats.encode()).figures[0].caption == "Fit (x - 3)^2 of 10^3 particles."


def test_jats_string_name_authors_and_fig_group_captions():
    jats = ('<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><title-group>'
            '<article-title>Clusters</article-title></title-group><contrib-group>'
            '<contrib contrib-type="author"><name><surname>M\u00fcller</surname><given-names>Anna</given-names>'
            '</name></contrib><contrib contrib-type="author"><string-name>Bob K. Lee</string-name></contrib>'
            '</contrib-group></article-meta></front><body><fig-group id="FG1"><label>Figure 1</label>'
            '<caption><p>Overview of the samples.</p></caption><fig id="F1a"><label>(a)</label><caption>'
            '<p>TEM image of Au25 clusters.</p></caption><graphic xlink:href="f1a"/></fig>'
            '<fig id="F1b"><label>(b)</label><caption><p>SEM image of the support.</p></caption>'
            '<graphic xlink:href="f1b"/></fig></fig-group></body></article>')
    article = read(jats.encode())
    assert article.authors == ["Anna M\u00fcller", "Bob K. Lee"]
    assert [(f.label, f.caption) for f in article.figures] == [
        ("Figure 1 (a)", "Overview of the samples. TEM image of Au25 clusters."),
        ("Figure 1 (b)", "Overview of the samples. SEM image of the support.")]


@needs_fixtures
def test_elsevier_graphical_abstract_is_no_figure():
    raw = (FIXTURES / "elsevier" / "j.jnoncrysol.2017.07.006.xml").read_text(encoding="utf-8")
    abstract = ('<ce:abstract class="graphical"><ce:abstract-sec><ce:simple-para><ce:figure id="f0099">'
                '<ce:link locator="fx1"/></ce:figure></ce:simple-para></ce:abstract-sec></ce:abstract>')
    marked = raw.replace("</ce:title>", "</ce:title>" + abstract, 1)
    assert marked != raw
    ids = [f.id for f in read(marked.encode()).figures]
    assert "f0099" not in ids and len(ids) == len(read(raw.encode()).figures)


@needs_fixtures
def test_a_cut_short_html_page_is_said_to_be(caplog):
    raw = (FIXTURES / "nature" / "srep23945.html").read_bytes()
    with caplog.at_level("WARNING", logger="miners.articles.html"):
        read(raw)
    assert "cut short" not in caplog.text
    with caplog.at_level("WARNING", logger="miners.articles.html"):
        article = read(raw[: len(raw) // 2], base_url="https://www.nature.com/articles/srep23945")
    assert "cut short" in caplog.text and article.doi == "10.1038/srep23945"


def test_xml_html_entities_and_thin_spaces_keep_words_apart():
    jats = ('<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><title-group>'
            '<article-title>Caf&eacute; particles</article-title></title-group></article-meta></front><body>'
            '<fig id="F1"><label>Figure 1</label><caption><p>HRTEM&nbsp;of a &ldquo;particle&rdquo; of '
            '5&nbsp;&micro;m &amp; more.</p></caption><graphic xlink:href="f1"/></fig></body></article>')
    article = read(jats.encode())
    assert article.title == "Caf\u00e9 particles"
    assert article.figures[0].caption == "HRTEM of a \u201cparticle\u201d of 5 \u00b5m & more."


def test_a_page_that_is_no_article_is_said_to_be(caplog):
    page = b"<html><head><title>Login</title></head><body><form><input name=user></form></body></html>"
    with caplog.at_level("WARNING", logger="miners.articles.html"):
        article = read(page, base_url="https://publisher.example/login")
    assert article.figures == [] and "login" in caplog.text and "rather than the article" in caplog.text


def test_a_figure_shown_twice_on_a_page_is_one_figure():
    figure = ('<figure id="{id}"><img src="{src}"><figcaption>Fig. 2. SEM image of films.</figcaption></figure>')
    page = ('<html><head><meta name="citation_title" content="Films"></head><body>'
            + figure.format(id="f2", src="fig2_thumb.jpg") + figure.format(id="f2dup", src="fig2_large.jpg")
            + '<figure id="f3"><img src="f3.png"><figcaption>Fig. 3. TEM image.</figcaption></figure></body></html>')
    figures = read(page.encode(), base_url="https://example.org/a/").figures
    assert [(f.id, f.image) for f in figures] == [("f2", "https://example.org/a/fig2_large.jpg"),
                                                  ("f3", "https://example.org/a/f3.png")]


# --------------------------------------------------------------------- XML figure image links
ELSEVIER_XML = FIXTURES / "elsevier" / "j.jnoncrysol.2017.07.006.xml"
ELSEVIER_API = "https://api.elsevier.com/content/object/eid/1-s2.0-S0022309317303496-{}?httpAccept=%2A%2F%2A"


@needs_fixtures
def test_elsevier_figure_takes_its_high_res_rendition_even_without_sizes():
    """The renditions were told apart by width x height only: without them the first listed, the
    ~200 px thumbnail, was the figure's image."""
    raw = ELSEVIER_XML.read_text(encoding="utf-8")
    unsized = re.sub(r' (?:width|height)="\d+"', "", raw)
    assert unsized.count("<object ") == raw.count("<object ") and "width=" not in unsized
    figures = read(unsized.encode()).figures
    assert [f.image for f in figures] == [ELSEVIER_API.format(f"gr{n}_lrg.jpg") for n in range(1, 14)]
    assert [f.note for f in figures] == [None] * 13
    # a figure whose only listed rendition is the thumbnail keeps it, and says so
    better = r'<object ref="gr2" category="(?:standard|high)"[^>]*>[^<]*</object>'
    thumbnail_only = read(re.sub(better, "", raw).encode()).figures[1]
    assert thumbnail_only.image == ELSEVIER_API.format("gr2.sml")
    assert "only a thumbnail (202x164 px)" in thumbnail_only.note


@needs_fixtures
def test_elsevier_figure_of_several_images_keeps_every_image():
    """Only the first <ce:link> of a figure was read: its other images were lost, silently."""
    raw = ELSEVIER_XML.read_text(encoding="utf-8")
    link = re.search(r'<ce:link id="lk0005" locator="gr1"[^>]*/>', raw).group(0)
    objects = "".join(re.findall(r'<object ref="gr1" [^>]*>[^<]*</object>', raw))
    two_images = raw.replace(link, link + link.replace("gr1", "gr1b").replace("lk0005", "lk0005b"), 1)
    two_images = two_images.replace("<objects>", "<objects>" + objects.replace("gr1", "gr1b"), 1)
    original = read(raw.encode()).figures
    figures = read(two_images.encode()).figures
    assert len(figures) == len(original) + 1
    first, second = figures[:2]
    assert (first.id, second.id) == ("f0005", "f0005-gr1b")
    assert first.label == second.label == "Fig. 1" and first.caption == second.caption == original[0].caption
    assert (first.image, second.image) == (ELSEVIER_API.format("gr1_lrg.jpg"), ELSEVIER_API.format("gr1b_lrg.jpg"))
    assert first.note.startswith("image 1 of 2 of Fig. 1") and second.note.startswith("image 2 of 2 of Fig. 1")
    assert "the caption describes all of them" in second.to_dict()["note"]
    assert [f.to_dict() for f in figures[2:]] == [f.to_dict() for f in original[1:]]


@needs_fixtures
def test_elsevier_formula_image_in_a_caption_is_no_image_of_the_figure():
    """The first <ce:link> anywhere in the figure was its image: an inline formula image in the
    caption (no figure rendition) left the figure without one."""
    raw = ELSEVIER_XML.read_text(encoding="utf-8")
    para = '<ce:simple-para id="sp0005" view="all">'
    formula = para + '<ce:inline-figure><ce:link locator="si1"/></ce:inline-figure>'
    figure = read(raw.replace(para, formula, 1).encode()).figures[0]
    assert (figure.id, figure.image) == ("f0005", ELSEVIER_API.format("gr1_lrg.jpg"))
    assert figure.caption == read(raw.encode()).figures[0].caption


@needs_fixtures
def test_springer_jats_without_the_api_wrapper_links_its_figures():
    """Springer's JATS without the API's <response> wrapper is read as plain JATS, which knew
    only PMC's figure folder: every figure image was None."""
    raw = (FIXTURES / "springer" / "spr_test1.xml").read_text(encoding="utf-8")
    bare = '<?xml version="1.0"?>\n' + raw[raw.index("<article "):raw.index("</article>") + len("</article>")]
    article = read(bare.encode())
    want = EXPECTED["springer/spr_test1.xml"]
    assert article.format == "jats" and article.doi == want["doi"]
    assert [f.image for f in article.figures] == [f["image"] for f in want["figures"]]
    assert article.figures[0].image.endswith("art%3A10.1186%2Fs11671-021-03631-x/MediaObjects/11671_2021_3631_Fig1_HTML.png")
    # as for the wrapped form, a page it was saved from resolves its links; an API endpoint does not
    mirrored = read(bare.encode(), base_url="https://mirror.example.org/s11671/").figures[0].image
    assert mirrored == "https://mirror.example.org/s11671/MediaObjects/11671_2021_3631_Fig1_HTML.png"
    api = read(bare.encode(), base_url="https://example.org/api/v1/jats?doi=10.1186/s11671-021-03631-x")
    assert api.figures[0].image == want["figures"][0]["image"]


@needs_fixtures
def test_elsevier_xml_without_objects_builds_image_urls_from_the_pii(caplog):
    """Without <objects> no figure had an image, and nothing said why."""
    raw = ELSEVIER_XML.read_text(encoding="utf-8")
    bare = re.sub(r"<objects>.*</objects>", "", raw, flags=re.DOTALL)
    assert "<object " not in bare
    figures = read(bare.encode()).figures
    cdn = "https://ars.els-cdn.com/content/image/1-s2.0-S0022309317303496-gr{}_lrg.jpg"
    assert [f.image for f in figures] == [cdn.format(n) for n in range(1, 14)]
    assert all("built from the PII" in f.note for f in figures)
    # the formatted <pii> alone is enough
    only_pii = re.sub(r"<eid>[^<]*</eid>", "", bare).replace('xlink:href="pii:S0022309317303496/', 'xlink:href="')
    assert read(only_pii.encode()).figures[0].image == cdn.format(1)
    # no PII at all: no image, and each figure and the log say it cannot be located
    anonymous = re.sub(r"<pii>[^<]*</pii>", "", only_pii)
    with caplog.at_level(logging.WARNING, logger="miners.articles.xml"):
        figures = read(anonymous.encode()).figures
    assert len(figures) == 13 and all(f.image is None for f in figures)
    assert all(f.note.startswith("image cannot be located") for f in figures)
    assert "13 figure images cannot be located" in caplog.text
