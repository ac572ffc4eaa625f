"""The services are their own component: editing them rebuilds no step, editing the
sailor rebuilds no services, and the contract they share rebuilds both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowrun.core import revision
from flowrun.settings import (
    CONTRACT_DIR,
    SAILOR_DIR,
    SERVICES_DIR,
    base_image,
    dockerfile_path,
    services_dockerfile_path,
)
from tests.conftest import COMPONENTS


@pytest.fixture
def trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    copies = {}
    for name, source in (("contract", CONTRACT_DIR), ("sailor", SAILOR_DIR),
                         ("services", SERVICES_DIR)):
        copies[name] = tmp_path / name
        shutil.copytree(source, copies[name], ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(revision, f"{name.upper()}_DIR", copies[name])
    return copies


def _revisions() -> tuple[str, str]:
    step = revision.compute_revision(COMPONENTS / "chat", dockerfile_path(), base_image())
    services = revision.services_revision(services_dockerfile_path(), base_image())
    return step, services


def _edit(tree: Path, name: str) -> None:
    path = tree / name
    path.write_text(path.read_text() + "\n# edited\n")


def test_editing_the_services_changes_no_steps_revision(trees: dict[str, Path]) -> None:
    step, services = _revisions()
    _edit(trees["services"], "http.py")
    assert _revisions() == (step, _revisions()[1]) and _revisions()[1] != services


def test_editing_the_sailor_changes_no_services_revision(trees: dict[str, Path]) -> None:
    step, services = _revisions()
    _edit(trees["sailor"], "runtime.py")
    new_step, new_services = _revisions()
    assert new_services == services and new_step != step


def test_editing_the_contract_changes_both(trees: dict[str, Path]) -> None:
    step, services = _revisions()
    _edit(trees["contract"], "wire.py")
    new_step, new_services = _revisions()
    assert new_step != step and new_services != services
