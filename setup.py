"""idx: electron-microscopy figures of the literature -> a database of particle measurements."""
from setuptools import find_packages, setup

setup(
    name="idx",
    version="0.1.0",
    description="Turn electron-microscopy figures of the scientific literature into a queryable "
    "database of particle measurements",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["idx", "idx.*", "miners", "miners.*", "models", "models.*"]),
    package_data={"models": ["weights/*.pt", "weights/*.json", "weights/*.md"], "idx": ["data/*"]},
    install_requires=[
        "torch==2.13.0",
        "numpy",
        "scipy",
        "scikit-image",
        "scikit-learn",
        "pandas",
        "pillow",
        "matplotlib",
        "tqdm",
        "click",
        "requests",
        "lxml",
        "beautifulsoup4",
        "pdfplumber",
        "pytesseract",
        "rdfpy",
        "sqlite-utils",
        "datasette",
    ],
    extras_require={"test": ["pytest", "reportlab", "pycocotools"]},
    entry_points={"console_scripts": ["idx=idx.cli:main"]},
)
