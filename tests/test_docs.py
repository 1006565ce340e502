"""The generated reference pages are up to date, and the docs' links and pictures exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", DOCS / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_up_to_date():
    text = _gen_docs().config_markdown()
    assert (DOCS / "config.md").read_text() == text, "run python docs/gen_docs.py"
    from faket_dask.config import SimulationConfig

    # every top-level section and a nested key appear (independent of the generator's walk)
    for name in SimulationConfig.model_fields:
        assert f"`{name}`" in text
    assert "`style.weights`" in text and "`output.modalities`" in text


def test_cli_reference_is_up_to_date():
    text = _gen_docs().cli_markdown()
    assert (DOCS / "cli.md").read_text() == text, "run python docs/gen_docs.py"
    for command in ("generate", "preview", "report", "split", "export-copick", "info"):
        assert f"### `faket-dask {command}`" in text


def test_relative_links_and_images_in_the_docs_exist():
    pages = [*DOCS.glob("*.md"), DOCS.parent / "README.md"]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing
    png = DOCS / "images" / "preview.png"
    assert png.stat().st_size < 300_000
