"""The Space's files agree with the project: its card declares the pinned Gradio, its requirements the dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces"


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_space_card_front_matter_names_the_app_and_the_pinned_gradio():
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---")[1])
    assert front["sdk"] == "gradio" and (SPACE / front["app_file"]).is_file()
    # The library's extra states a range; the Space runs one version of it, the card's sdk_version, which the test
    # environment pins too.
    wanted = next(r for r in project()["optional-dependencies"]["space"] if r.startswith("gradio"))
    assert Version(front["sdk_version"]) in Requirement(wanted).specifier
    tested = next(r for r in project()["optional-dependencies"]["dev"] if r.startswith("gradio"))
    assert tested == f"gradio[oauth]=={front['sdk_version']}"
    assert front["title"] and len(front["short_description"]) <= 60


def test_space_card_enables_sign_in_with_a_scope_that_can_push():
    front = yaml.safe_load((SPACE / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert front["hf_oauth"] is True
    # A push creates a model repository and writes to it; nothing in the card asks for more (no deletion).
    assert set(front["hf_oauth_scopes"]) & {"contribute-repos", "write-repos", "manage-repos"}
    assert "manage-repos" not in front["hf_oauth_scopes"]
    listed = (SPACE / "requirements.txt").read_text()
    assert "authlib" in listed and "itsdangerous" in listed  # gradio's oauth extra, however gradio is installed


def test_space_requirements_cover_the_package_dependencies():
    def names(lines):
        return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                for line in lines if line.strip() and not line.strip().startswith(("#", "-"))}

    required = names(project()["dependencies"]) | names(project()["optional-dependencies"]["assets"])
    listed = names((SPACE / "requirements.txt").read_text().splitlines())
    assert required <= listed, f"missing from spaces/requirements.txt: {sorted(required - listed)}"
    assert "gradio" not in listed  # the Space installs the card's sdk_version itself
