"""The extension's packaging files agree with each other and name files that exist."""

from __future__ import annotations

import json
import re
import sys
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


def _imports_of_the_core() -> dict[str, set[str]]:
    """Each LungGANLib module -> the LungGANLib modules it imports anywhere (top level, in functions, typing blocks)."""
    import ast

    root = REPO / "LungGANLib"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                for alias in node.names:
                    imported = f"{target}.{alias.name}"
                    graph[name] |= {imported} if imported in modules else ({target} if target in modules else set())
            elif isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in modules}
    return graph


def test_the_core_has_no_import_cycle_even_through_imports_inside_functions():
    graph = _imports_of_the_core()
    assert graph["LungGANLib.train.compare_report"] >= {"LungGANLib.train.compare"}  # the walk sees real imports
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == []


#: The core's stages in the order they may import each other (docs/ARCHITECTURE.md): a module imports only
#: from its own stage and the ones before it. "base" are the top-level helpers, "cli" the command line.
STAGES = ["base", "io", "models", "segment", "evaluate", "train", "slicer", "cli"]
CLI_MODULES = {"cli", "cli_parser", "train_command"}


def _stage(module: str) -> str:
    parts = module.split(".")  # LungGANLib[.stage][.module]
    if len(parts) >= 2 and parts[1] in STAGES:
        return parts[1]
    return "cli" if parts[-1] in CLI_MODULES else "base"


def test_each_stage_imports_only_from_the_stages_before_it():
    graph = _imports_of_the_core()
    assert {_stage(m) for m in graph} == set(STAGES)  # every stage exists as a package (or, base and cli, as modules)
    assert graph["LungGANLib.train.trainer"] >= {"LungGANLib.evaluate.metrics", "LungGANLib.models.device"}
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if STAGES.index(_stage(t)) > STAGES.index(_stage(m)))
    assert upward == []


def test_the_flat_module_names_of_0_1_still_import_for_one_release():
    import importlib
    import warnings

    from LungGANLib._moved import MOVED

    for old, new in MOVED.items():
        if old in ("widget",):  # needs Qt
            continue
        sys.modules.pop(f"LungGANLib.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"LungGANLib.{old}")
        assert module is importlib.import_module(f"LungGANLib.{new}")
        assert module.__spec__.name == f"LungGANLib.{new}"  # the real module keeps its own spec
        assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
            f"LungGANLib.{old} is now LungGANLib.{new}; the old name goes after the next release"]
    assert sorted(p.stem for p in (REPO / "LungGANLib").glob("*.py")) == sorted(
        ["__init__", "_moved", *CLI_MODULES, "config", "dependencies", "errors", "progress"])  # the flat files are gone


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in [*(REPO / "LungGANLib").rglob("*.py"), *(REPO / "LungGAN").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
    assert len((REPO / "LungGAN" / "LungGAN.py").read_text().splitlines()) <= 150  # the module file stays thin


def test_every_import_the_docs_show_works():
    """Each ``from LungGANLib... import ...`` in a Python block of the README or docs/ names something that exists."""
    import ast
    import importlib

    shown = []
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "LungGANLib":
                    shown += [(page.name, node.module, alias.name) for alias in node.names]
    assert ("README.md", "LungGANLib.io", "write_image") in shown  # the walk reads the blocks
    missing = [f"{page}: from {module} import {name}" for page, module, name in shown
               if not hasattr(importlib.import_module(module), name)]
    assert missing == []
