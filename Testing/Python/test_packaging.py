"""The extension's packaging files agree with each other and name files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
S4EXT_FIELDS = ["scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled"]


def s4ext() -> dict[str, str]:
    fields = {}
    for line in (REPO / "LungGAN.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def cmake_set(name: str) -> str:
    match = re.search(rf'set\({name} "([^"]*)"\)', (REPO / "CMakeLists.txt").read_text())
    assert match, name
    return match.group(1)


def test_s4ext_has_every_field_and_matches_cmake():
    fields = s4ext()
    assert list(fields) == S4EXT_FIELDS
    assert all(fields[k] for k in S4EXT_FIELDS)
    assert fields["category"] == cmake_set("EXTENSION_CATEGORY") == "Segmentation"
    assert fields["depends"] == cmake_set("EXTENSION_DEPENDS") == "PyTorch"
    assert fields["homepage"] == cmake_set("EXTENSION_HOMEPAGE")
    assert fields["iconurl"] == cmake_set("EXTENSION_ICONURL")


#: The rules of Slicer's catalog entry schema v1.0.2 (Slicer/Slicer, Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json,
#: the current one): required keys, no other keys than these, and each one's type.
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                 "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool, "tier": int}


def test_extensions_index_entry_is_valid_and_matches():
    entry = json.loads((REPO / "ExtensionsIndex" / "LungGAN.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert CATALOG_REQUIRED <= set(entry) <= set(CATALOG_TYPES)
    assert all(isinstance(entry[k], CATALOG_TYPES[k]) for k in entry)
    assert entry.get("scm_type", "git") in ("git", "local")
    assert 1 <= entry.get("tier", 1) <= 5 and all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    fields = s4ext()
    assert entry["category"] == fields["category"] and entry["scm_url"] == fields["scmurl"]
    assert entry["build_dependencies"] == fields["depends"].split()


def test_module_cmake_installs_files_that_exist():
    text = (REPO / "LungGAN" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    resources = re.findall(r"^\s+(Resources/\S+)$", text, re.M)
    assert "Resources/UI/LungGAN.ui" in resources and "Resources/Models/lunggan.safetensors" in resources
    assert all((REPO / r).is_file() for r in resources), [r for r in resources if not (REPO / r).is_file()]
    assert "LungGANLib/*.py" in text  # every module of the core, sub-packages included (GLOB_RECURSE)
    top = (REPO / "CMakeLists.txt").read_text()
    assert "add_subdirectory(LungGAN)" in top


def test_the_repository_has_the_licence_its_metadata_names():
    """The Extensions Index checks need a LICENSE file at the root; pyproject.toml names the same licence."""
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert re.search(r'^license = "Apache-2.0"$', (REPO / "pyproject.toml").read_text(), re.M)
