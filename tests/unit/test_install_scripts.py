"""A Node.js component's install scripts never run on the host (issue 18, item 1).

npm runs on the host to fetch a component's dependencies; with the scripts it would
run whatever a package.json says, as the user who ran flowrun. These need npm (which
`make test` installs) but no Docker engine.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from flowrun.core.component import Component, Descriptor, Runtime, load_component
from flowrun.errors import ComponentError
from tests.conftest import flowrun

SCRIPTS = ("preinstall", "install", "postinstall", "prepare")


def _node_component(root: Path, package: dict[str, object]) -> Path:
    root.mkdir(parents=True)
    (root / "component.json").write_text(json.dumps({
        "title": "hostile", "actions": {"go": {"main": "./go.js"}}}))
    (root / "go.js").write_text("exports.process = async function () {};\n")
    (root / "package.json").write_text(json.dumps(package))
    return root


def _marking(marks: Path) -> dict[str, str]:
    return {s: f"node -e \"require('fs').writeFileSync('{marks}/{s}', 'ran')\""
            for s in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_component_with_its_own_install_script_is_refused(tmp_path: Path,
                                                            script: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    component = _node_component(tmp_path / "c", {
        "name": "c", "version": "1.0.0",
        "dependencies": {"elasticio-sailor-nodejs": "2.7.8"},
        "scripts": {script: _marking(marks)[script]}})
    with pytest.raises(ComponentError, match=f"scripts.{script} would run at install time"):
        load_component(component, "step 'x'")
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"version: 1\nname: hostile\nsteps:\n"
                    f"  - {{id: a, component: {component}, function: go}}\n")
    result = flowrun("validate", str(flow), check=False)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not list(marks.iterdir())


def _packed(directory: Path, package: dict[str, object]) -> Path:
    """An npm tarball (package/...), made without npm (whose `pack` runs scripts too)."""
    target = directory / "evil-1.0.0.tgz"
    with tarfile.open(target, "w:gz") as tar:
        for name, text in (("package/package.json", json.dumps(package)),
                           ("package/index.js", "module.exports = 1;\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def test_a_dependencys_install_scripts_never_run_on_the_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is missing; `make npm` installs it")
    from flowrun.engine.images import node_modules

    marks = tmp_path / "marks"
    marks.mkdir()
    tarball = _packed(tmp_path, {"name": "evil", "version": "1.0.0",
                                 "scripts": _marking(marks)})
    component = _node_component(tmp_path / "c", {
        "name": "c", "version": "1.0.0", "dependencies": {"evil": f"file:{tarball}"}})
    monkeypatch.setenv("FLOWRUN_CACHE", str(tmp_path / "cache"))
    # Built by hand: the platform's sailor as a dependency would be a download here.
    modules = node_modules(Component(component, Descriptor(title="hostile"), Runtime.NODE))
    assert (modules / "evil" / "index.js").is_file()  # installed, its scripts not run
    assert not list(marks.iterdir())
