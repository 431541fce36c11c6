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


def test_the_host_names_its_cpu_model_and_the_cpus_this_process_may_use(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                       "model name\t: AMD EPYC  9454 48-Core Processor\n\nprocessor\t: 1\n"
                       "model name\t: AMD EPYC 9454 48-Core Processor\n")
    assert provenance.cpu_model(cpuinfo) == "AMD EPYC 9454 48-Core Processor"
    host = provenance.host()
    assert host["cpus"] >= 1
    assert host["cpu"] is None or host["cpu"].strip() == host["cpu"]


def test_a_cpu_model_that_cannot_be_read_is_none_or_the_platforms_word(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    assert provenance.cpu_model(tmp_path / "absent") is None
    (tmp_path / "no-model").write_text("processor\t: 0\n")
    assert provenance.cpu_model(tmp_path / "no-model") is None
