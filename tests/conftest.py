"""Shared test fixtures: the real public files in ../shared and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RLHF_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED} (set RLHF_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def tinystories_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / "tinystories-260k"


@pytest.fixture(scope="session")
def tinystories_tokenizer(tinystories_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tinystories_path)


@pytest.fixture()
def fixtures_dir() -> Path:
    return FIXTURES
