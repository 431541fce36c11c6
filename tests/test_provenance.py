"""Provenance: the software versions recorded with every result."""

from __future__ import annotations

import re

from infergy import provenance


def test_versions_name_python_infergy_its_source_and_tracked_packages():
    versions = provenance.software_versions()
    assert versions["python"] and versions["infergy"]
    assert re.fullmatch(r"[0-9a-f]{12}", versions["infergy_source"])
    for name in provenance.TRACKED_PACKAGES:
        assert name in versions  # None where the package is absent, never missing


def test_source_digest_follows_the_content_of_infergy_files(tmp_path, monkeypatch):
    package = tmp_path / "infergy"
    (package / "meter").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "meter" / "nvml.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code\n")
    monkeypatch.setattr(provenance.infergy, "__file__", str(package / "__init__.py"))
    first = provenance.source_digest()
    assert provenance.source_digest() == first
    (package / "notes.txt").write_text("changed, but not code\n")
    assert provenance.source_digest() == first
    (package / "meter" / "nvml.py").write_text("y = 3\n")
    assert provenance.source_digest() != first
