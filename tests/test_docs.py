"""The documentation: the generated reference pages are what the code says now (a stale page fails),
the README stays a front door, and every config key the docs show exists. The site's strict build
(broken links, missing pages) runs in `make test` before the suite (`make docs-check`)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_are_up_to_date():
    for name, text in _generator().pages().items():
        committed = (DOCS / "reference" / name).read_text(encoding="utf-8")
        assert committed == text, (
            f"docs/reference/{name} is stale: run `make docs` (python docs/gen_reference.py)"
        )


def test_the_configuration_reference_has_every_field_of_every_command():
    """A planted check of the generator itself: a field the code has is in the page, and a
    renamed key is listed with its new name."""
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    for key in ("`rollout.samples_per_prompt`", "`max_nonfinite`", "`reward.model`", "`eval.fraction`",
                "`loss_type`", "`output_dir`"):  # fmt: skip
        assert key in page, key
    assert "`steps` → `max_steps`" in page
    assert "`logging.output_dir` → `output_dir`" in page


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
