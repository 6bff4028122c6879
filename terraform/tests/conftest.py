"""Helpers for the structural tests: terraform/ parsed with python-hcl2 into plain Python.

Strings keep Terraform's interpolation syntax ("${var.x}"), blocks become lists of dicts and
`dynamic "x" {}` blocks stay under the key "dynamic".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

TF = Path(__file__).resolve().parents[1]
REPO = TF.parent

_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=_OPTIONS)


@dataclass
class Module:
    """One Terraform module (the root or one under modules/), all of its .tf files merged."""

    path: Path
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resource_files: dict[tuple[str, str], str] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert (rtype, name) in self.resources, f"{self.path.name}: no {rtype}.{name}"
        return self.resources[(rtype, name)]

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {n: body for (t, n), body in self.resources.items() if t == rtype}


def load_module(path: Path) -> Module:
    m = Module(path)
    for tf in sorted(path.glob("*.tf")):
        doc = parse(tf)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    m.resources[(rtype, name)] = body
                    m.resource_files[(rtype, name)] = tf.name
        for block in doc.get("variable", []):
            m.variables.update(block)
        for block in doc.get("output", []):
            m.outputs.update(block)
        for block in doc.get("locals", []):
            m.locals.update(block)
        for block in doc.get("module", []):
            m.calls.update(block)
        m.terraform.extend(doc.get("terraform", []))
    return m


@pytest.fixture(scope="session")
def root() -> Module:
    return load_module(TF)


@pytest.fixture(scope="session")
def modules() -> dict[str, Module]:
    return {p.name: load_module(p) for p in sorted((TF / "modules").iterdir()) if p.is_dir()}


def one(blocks: Any) -> dict[str, Any]:
    """The single block of a nested block list (`push_config { … }` → its dict)."""
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one block, got {blocks!r}"
    return blocks[0]


def walk(value: Any, path: str = ""):
    """Yields (path, leaf) for every leaf value of a parsed structure."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, value


def rust_routes(crate_dir: Path) -> set[tuple[str, str]]:
    """(METHOD, path) of every `.route("/path", get(handler))` in a function's lib.rs."""
    src = (crate_dir / "src" / "lib.rs").read_text(encoding="utf-8")
    found = set()
    for path, method in re.findall(r'\.route\(\s*"([^"]+)"\s*,\s*(get|post|put|delete|patch)\(', src):
        found.add((method.upper(), path))
    return found


def rust_env_vars() -> set[str]:
    """Every environment variable the Rust code reads through clap (`env = "NAME"`)."""
    names = set()
    for rs in list((REPO / "shared").rglob("src/**/*.rs")) + list((REPO / "functions").rglob("src/*.rs")):
        names.update(re.findall(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"', rs.read_text(encoding="utf-8")))
    return names
