"""The distribution's name, its extras and the install lines of the docs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `tapkit` on the package index is an unrelated project; ours is published under this name.
DISTRIBUTION = "tapkit-vision"
# Each of these pins or pulls a torch of its own (open_clip -> torchvision -> torch==X).
NO_EXTRA_MAY_PULL = {"torch", "torchvision", "torchaudio", "open-clip-torch", "open_clip_torch", "timm"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].strip().lower()


def test_distribution_name_is_ours_and_the_command_and_import_stay_tapkit():
    project = _pyproject()["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"tapkit": "tapkit.cli.main:main"}
    assert (ROOT / "src" / "tapkit" / "__init__.py").is_file()


def test_extras_refer_to_the_distribution_and_pull_no_torch():
    extras = _pyproject()["project"]["optional-dependencies"]
    for extra, requirements in extras.items():
        for requirement in requirements:
            name = _name(requirement)
            assert name not in NO_EXTRA_MAY_PULL, f"[{extra}] pulls {requirement}"
            if name.startswith("tapkit"):
                assert name == DISTRIBUTION, f"[{extra}] names {requirement}, not {DISTRIBUTION}"
                wanted = re.search(r"\[(.*)\]", requirement).group(1).split(",")
                assert set(wanted) <= set(extras), f"[{extra}] asks for missing extras {wanted}"
    assert "torch" in {_name(r) for r in _pyproject()["project"]["dependencies"]}


def _texts():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / ".ci" / "run",
             *(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").glob("*")]
    return [(f, f.read_text()) for f in files if f.is_file()]


def test_no_install_line_names_someone_elses_package():
    bad = re.compile(r"pip install(?:\s+-\S+)*\s+['\"]?tapkit(?:\[[^\]]*\])?['\"]?(?=[\s`]|$)", re.M)
    found = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f, text in _texts() for m in bad.finditer(text)]
    assert not found, found
    assert not [f for f, text in _texts() if re.search(r"import open_clip|pip install[^\n]*open.clip", text)]
    hints = re.compile(r"pip install '([a-z-]+)\[")
    names = {m.group(1) for _, text in _texts() for m in hints.finditer(text)}
    assert names <= {DISTRIBUTION}, names


def test_readme_installs_torch_before_tapkit():
    install = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("###", 1)[0]
    lines = [line for line in install.splitlines() if line.startswith("pip install")]
    assert lines[0].startswith("pip install torch") and any('-e ".[all]"' in line for line in lines)
