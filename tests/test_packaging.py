"""What a Python packager checks: one version, a licence, type information shipped."""

import importlib.metadata
from pathlib import Path

import cruise

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_for_the_package_and_its_metadata():
    assert importlib.metadata.version("cruise") == cruise.__version__


def test_the_licence_the_metadata_claims_is_in_the_tree():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert importlib.metadata.metadata("cruise")["License"] == "MIT"


def test_packages_are_marked_typed():
    assert (ROOT / "cruise" / "py.typed").exists() and (ROOT / "brokerless" / "py.typed").exists()
