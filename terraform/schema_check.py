#!/usr/bin/env python3
"""Checks every resource, data and provider block in terraform/ against the providers' schemas,
offline: what `terraform validate` would say about arguments and blocks, without a provider
download (none is possible here, docs/DEPLOY.md).

The schemas come from the CDK for Terraform bindings on npm, pinned below: each package is
generated from `terraform providers schema -json` of one provider version and ships that schema
as a jsii type assembly (`package/.jsii`, every resource's config struct with its optional flags
and nested block structs) plus the generated JavaScript (`package/lib/*/index.js`, the Terraform
name of every argument, whether it is a block, list or set, and the read-only attributes). The
first run downloads each package once (`npm pack`), turns it back into a schema in the format of
`terraform providers schema -json` and keeps that in
${XDG_CACHE_HOME:-~/.cache}/frequency-tickets/provider-schemas (a stamp file per provider, like
ensure_venv in scripts/lib.sh); later runs read only the cached JSON.

Reported: an unknown resource or data source type, an unknown argument or nested block, an
argument written as a block or a block written as an argument, a read-only (computed) attribute
that is set, a missing required argument or block, more than one instance of a block that allows
one, a literal value of the wrong type (string, number, bool, list, map; a reference or any other
expression has no known type here and is not type-checked), `dynamic` blocks (their `content`
checked as the nested block), `lifecycle.ignore_changes` paths, a provider with no pinned schema
and a `required_providers` constraint that does not admit the pinned schema's version.

Not derivable from the bindings, so not checked: min_items above 1, max_items other than 1,
ConflictsWith/ExactlyOneOf, validation functions, and read-only attributes below the top level.

Usage:
  terraform/schema_check.py [PATH...]   check PATHs (.tf files or directories; default terraform/)
  terraform/schema_check.py --fetch     only make sure every pinned schema is cached
  --package @cdktf/provider-google@14.19.0   check against another package version (e.g. the
                                             oldest provider version versions.tf admits)
Exit status: 0 no findings, 1 findings, 2 no schema could be had.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

# Provider source → the npm package of CDK for Terraform bindings generated from its schema.
# @cdktf/provider-google 16.12.1 is hashicorp/google 6.50.0, the last 6.x release, so the newest
# version `~> 6.20` admits; the provider version is read from the package's package.json.
PROVIDERS = {
    "hashicorp/google": "@cdktf/provider-google@16.12.1",
    "hashicorp/google-beta": "@cdktf/provider-google-beta@16.12.1",
    "hashicorp/random": "@cdktf/provider-random@12.0.1",
    "hashicorp/time": "@cdktf/provider-time@11.0.1",
}
# Bump when derive() changes: the cached schemas are derived again.
DERIVE_VERSION = 2

TF = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "frequency-tickets" / "provider-schemas"

RESOURCE_META = {"count", "for_each", "depends_on", "provider"}
RESOURCE_META_BLOCKS = {"lifecycle", "provisioner", "connection"}
DATA_META_BLOCKS = {"lifecycle"}
LIFECYCLE_ARGS = {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by"}
LIFECYCLE_BLOCKS = {"precondition", "postcondition"}
DYNAMIC_ARGS = {"for_each", "iterator", "labels"}


def log(msg: str) -> None:
    print(f"schema_check: {msg}", file=sys.stderr, flush=True)


# --- The schemas: download once, derive, cache -------------------------------------------------


def split_spec(spec: str) -> tuple[str, str]:
    name, _, version = spec.rpartition("@")
    if not name or not version:
        raise SystemExit(f"schema_check: bad package spec {spec!r} (want @scope/name@version)")
    return name, version


def cache_files(spec: str) -> tuple[Path, Path]:
    stem = spec.lstrip("@").replace("/", "-").replace("@", "-")
    return CACHE / f"{stem}.schema.json", CACHE / f"{stem}.installed"


def ensure_schema(spec: str) -> Path:
    """The cached schema JSON of one package spec, downloaded and derived unless its stamp says so."""
    path, stamp = cache_files(spec)
    want = f"{spec} derive={DERIVE_VERSION}"
    if path.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == want:
        return path
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("schema_check: npm is required to fetch the provider schemas (apt-get install npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"fetching {spec} from npm into {CACHE} (once)")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        result = subprocess.run(
            [npm, "pack", "--silent", "--pack-destination", tmp, spec],
            cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
        )
        tgzs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or len(tgzs) != 1:
            raise SystemExit(f"schema_check: npm pack {spec} failed:\n{result.stderr.strip()}")
        downloaded = time.monotonic()
        size = tgzs[0].stat().st_size
        schema = derive(tgzs[0], spec)
        part = path.with_suffix(".part")
        part.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True), encoding="utf-8")
        part.replace(path)
    stamp.write_text(want, encoding="utf-8")
    log(
        f"{spec}: {size / 2**20:.1f} MiB downloaded in {downloaded - started:.1f} s, "
        f"derived in {time.monotonic() - downloaded:.1f} s → {path.name} ({path.stat().st_size // 1024} KiB)"
    )
    return path


# A property's Terraform name, as the bindings' doc comment links to it.
_DOC_LINK = re.compile(r"registry\.terraform\.io/providers/[^/\s]+/[^/\s]+/[^/\s]+/docs(?:/[a-z-]+/[a-z0-9_]+)?#([a-z0-9_]+) ")
# One entry of a generated `…ToHclTerraform` function: name, value, isBlock, type, storageClassType.
_HCL_ENTRY = re.compile(
    r'(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: "(\w+)",\s*storageClassType: "(\w+)",\s*\}', re.S
)
_STRUCT_FN = re.compile(r"\nfunction (\w+)ToHclTerraform\(struct\) \{(.*?)\n\}", re.S)
_CLASS = re.compile(r"\nclass (\w+) extends cdktf\.(?:TerraformResource|TerraformDataSource|TerraformProvider) \{(.*?)\n\}\n", re.S)
_COMPUTED = re.compile(r"// (\w+) - computed: true, optional: false, required: false\n(.*\n.*)")
_GETTER_TYPES = {
    "getStringAttribute": "string",
    "getNumberAttribute": "number",
    "getBooleanAttribute": "bool",
    "getListAttribute": ["list", "string"],
    "getNumberListAttribute": ["list", "number"],
    "getStringMapAttribute": ["map", "string"],
    "getNumberMapAttribute": ["map", "number"],
    "getBooleanMapAttribute": ["map", "bool"],
    "cdktf.StringMap": ["map", "string"],
    "cdktf.NumberMap": ["map", "number"],
    "cdktf.BooleanMap": ["map", "bool"],
}


def _js_entries(text: str) -> dict[str, tuple[str, bool, str]]:
    """JS property name → (Terraform name, is a block, "simple"/"list"/"set"/"map"/"struct")."""
    out = {}
    for name, value, is_block, kind, _storage in _HCL_ENTRY.findall(text):
        m = re.search(r"(?:struct\.|this\._)(\w+)", value)
        if m:
            out[m.group(1)] = (name, is_block == "true", kind)
    return out


def derive(tgz: Path, spec: str) -> dict[str, Any]:
    """The `terraform providers schema -json` document of the provider a bindings package wraps."""
    jsii = None
    package = None
    functions: dict[tuple[str, str], dict] = {}  # (module dir, struct function) → entries
    classes: dict[tuple[str, str], tuple[dict, dict]] = {}  # (module dir, class) → entries, computed
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            if member.name == "package/.jsii":
                jsii = json.load(tar.extractfile(member))
            elif member.name == "package/package.json":
                package = json.load(tar.extractfile(member))
            elif member.name.startswith("package/lib/") and member.name.endswith(".js"):
                parts = member.name.split("/")
                if len(parts) < 4:
                    continue
                module = parts[2]
                text = tar.extractfile(member).read().decode("utf-8")
                for fn, body in _STRUCT_FN.findall(text):
                    functions[(module, fn)] = _js_entries(body)
                for cls, body in _CLASS.findall(text):
                    start = body.find("synthesizeHclAttributes() {")
                    entries = _js_entries(body[start:]) if start >= 0 else {}
                    computed = {}
                    for name, line in _COMPUTED.findall(body):
                        ctype: Any = "dynamic"
                        for marker, t in _GETTER_TYPES.items():
                            if marker in line:
                                ctype = t
                                break
                        computed[name] = ctype
                    classes[(module, cls)] = (entries, computed)
    if jsii is None or package is None:
        raise SystemExit(f"schema_check: {tgz.name} has no package/.jsii or package/package.json")
    provider_info = (package.get("cdktf") or {}).get("provider") or {}
    source = provider_info.get("name", "").removeprefix("registry.terraform.io/")
    version = provider_info.get("version", "")
    types = jsii["types"]

    def module_of(t: dict) -> str:
        return t["locationInModule"]["filename"].split("/")[1]

    def is_struct(ty: dict) -> bool:
        return "fqn" in ty and types.get(ty["fqn"], {}).get("datatype", False)

    def attr_type(ty: dict) -> Any:
        if "primitive" in ty:
            return {"string": "string", "number": "number", "boolean": "bool", "any": "dynamic"}.get(ty["primitive"], "dynamic")
        if "union" in ty:
            rest = [t for t in ty["union"]["types"] if t.get("fqn") != "cdktf.IResolvable"]
            return attr_type(rest[0]) if len(rest) == 1 else "dynamic"
        if "collection" in ty:
            c = ty["collection"]
            return ["list" if c["kind"] == "array" else "map", attr_type(c["elementtype"])]
        return "dynamic"

    def tf_name(prop: dict, js: dict) -> str:
        if prop["name"] in js:
            return js[prop["name"]][0]
        m = _DOC_LINK.search(json.dumps(prop.get("docs", {})))
        if m:
            return m.group(1)
        return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", prop["name"]).lower()

    def block(fqn: str, js: dict) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        for prop in types[fqn].get("properties", []):
            ty = prop["type"]
            name = tf_name(prop, js)
            optional = bool(prop.get("optional"))
            kind = js.get(prop["name"], (name, False, "list"))[2]
            struct, single = None, False
            if is_struct(ty):
                struct, single = ty["fqn"], True
            elif "union" in ty:
                for u in ty["union"]["types"]:
                    c = u.get("collection")
                    if c and is_struct(c["elementtype"]):
                        struct = c["elementtype"]["fqn"]
            if struct:
                st = types[struct]
                nested_js = functions.get((module_of(st), st["name"][0].lower() + st["name"][1:]), {})
                b: dict[str, Any] = {"nesting_mode": "single" if kind == "struct" else ("set" if kind == "set" else "list")}
                b["block"] = block(struct, nested_js)
                if single and kind != "struct":
                    b["max_items"] = 1
                if not optional:
                    b["min_items"] = 1
                block_types[name] = b
            else:
                t = attr_type(ty)
                if kind == "set" and isinstance(t, list) and t[0] == "list":
                    t = ["set", t[1]]
                attributes[name] = {"type": t, ("optional" if optional else "required"): True}
        out: dict[str, Any] = {}
        if attributes:
            out["attributes"] = attributes
        if block_types:
            out["block_types"] = block_types
        return out

    resources: dict[str, Any] = {}
    data_sources: dict[str, Any] = {}
    provider: dict[str, Any] = {}
    for t in types.values():
        base = t.get("base")
        if t["kind"] != "class" or base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource", "cdktf.TerraformProvider"):
            continue
        config = next(p for p in t["initializer"]["parameters"] if p["name"] == "config")["type"]["fqn"]
        entries, computed = classes.get((module_of(t), t["name"]), ({}, {}))
        body = block(config, entries)
        if base == "cdktf.TerraformProvider":
            provider = {"version": 0, "block": body}
            continue
        attrs = body.setdefault("attributes", {})
        for name, ctype in computed.items():
            if name not in attrs and name not in body.get("block_types", {}):
                attrs[name] = {"type": ctype, "computed": True}
        m = re.search(r"\{@link \S+ ([a-z0-9_]+)\}", t["docs"].get("summary", ""))
        if not m:
            continue
        (resources if base == "cdktf.TerraformResource" else data_sources)[m.group(1)] = {"version": 0, "block": body}
    return {
        "format_version": "1.0",
        "provider_schemas": {
            f"registry.terraform.io/{source}": {
                "provider": provider,
                "resource_schemas": resources,
                "data_source_schemas": data_sources,
            }
        },
        # Not in Terraform's format: where this came from and what it lacks.
        "derived_from": {
            "package": spec,
            "provider": source,
            "provider_version": version,
            "derive_version": DERIVE_VERSION,
            "not_derived": "descriptions, sensitive, deprecated, min_items > 1, max_items > 1, "
            "optional+computed, read-only attributes below the top level",
        },
    }


@dataclass
class Schema:
    source: str
    version: str
    package: str
    provider: dict[str, Any]
    resources: dict[str, Any]
    data_sources: dict[str, Any]


def load_schema(spec: str) -> Schema:
    doc = json.loads(ensure_schema(spec).read_text(encoding="utf-8"))
    (key, body), = doc["provider_schemas"].items()
    meta = doc["derived_from"]
    return Schema(
        key.removeprefix("registry.terraform.io/"), meta["provider_version"], spec,
        body["provider"], body["resource_schemas"], body["data_source_schemas"],
    )


# --- The configuration: HCL blocks with line numbers -------------------------------------------


@dataclass
class Attr:
    name: str
    value: Any
    line: int


@dataclass
class Block:
    type: str
    labels: list[str]
    line: int
    attrs: dict[str, Attr] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.type == kind]


def parse_file(path: Path) -> Block:
    import hcl2  # python-hcl2 8.1.4, in the tools virtualenv (terraform/check.sh)
    from hcl2.rules.base import AttributeRule, BlockRule
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(
        with_comments=False, explicit_blocks=True, strip_string_quotes=False, preserve_heredocs=False
    )

    def unquote(s: str) -> str:
        return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s

    def line_of(rule) -> int:
        meta = getattr(rule, "_meta", None)
        return 0 if meta is None or getattr(meta, "empty", True) else meta.line

    def body_of(body, node: Block) -> Block:
        for child in body.children:
            if isinstance(child, AttributeRule):
                name = child.identifier.serialize(options)
                node.attrs[name] = Attr(name, child.expression.serialize(options), line_of(child))
            elif isinstance(child, BlockRule):
                labels = [unquote(str(label.serialize(options))) for label in child.labels]
                node.blocks.append(body_of(child.body, Block(labels[0], labels[1:], line_of(child))))
        return node

    tree = hcl2.parses(path.read_text(encoding="utf-8"), discard_comments=True)
    return body_of(tree.body, Block("file", [], 1))


# --- Values: literal or expression --------------------------------------------------------------

UNKNOWN = object()


def literal_kind(value: Any) -> Any:
    """"string", "number", "bool", "list", "object", None (null) or UNKNOWN (any expression)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"' and "${" not in value and "%{" not in value:
            return "string"
        return UNKNOWN
    return UNKNOWN


def render(value: Any) -> str:
    """A parsed value written back roughly as HCL, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {render(v)}" for k, v in value.items() if k != "__is_block__") + " }"
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return str(value)


def type_name(t: Any) -> str:
    if isinstance(t, list):
        return f"{t[0]}({type_name(t[1])})"
    return str(t)


def type_errors(value: Any, want: Any, where: str) -> list[str]:
    """Why a literal cannot be converted to the attribute's type ([] if it can, or is not a literal)."""
    kind = literal_kind(value)
    if kind is UNKNOWN or kind is None or want == "dynamic":
        return []
    shown = render(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    if isinstance(want, list):
        outer, inner = want
        if outer in ("list", "set"):
            if kind != "list":
                return [f"{where}: {type_name(want)} required, got {kind} {shown}"]
            return [e for i, v in enumerate(value) for e in type_errors(v, inner, f"{where}[{i}]")]
        if outer == "map":
            if kind != "object":
                return [f"{where}: {type_name(want)} required, got {kind} {shown}"]
            return [e for k, v in value.items() if k != "__is_block__" for e in type_errors(v, inner, f"{where}[{k}]")]
        return []
    if kind in ("list", "object"):
        return [f"{where}: {want} required, got {kind} {shown}"]
    if want == "string":
        return []  # numbers and bools convert to strings
    if want == "number":
        if kind == "bool":
            return [f"{where}: number required, got bool {shown}"]
        if kind == "string":
            try:
                float(value[1:-1])
            except ValueError:
                return [f"{where}: number required, got string {shown}"]
        return []
    if want == "bool":
        if kind == "number":
            return [f"{where}: bool required, got number {shown}"]
        if kind == "string" and value[1:-1] not in ("true", "false"):
            return [f"{where}: bool required, got string {shown}"]
    return []


# --- Checking -----------------------------------------------------------------------------------


@dataclass
class Finding:
    file: str
    line: int
    address: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.address}: {self.message}"


class Checker:
    def __init__(self, schemas: dict[str, Schema]):
        self.schemas = schemas  # by source ("hashicorp/google")
        self.findings: list[Finding] = []
        self.checked = 0

    def report(self, file: str, line: int, address: str, message: str) -> None:
        self.findings.append(Finding(file, line, address, message))

    @staticmethod
    def hint(name: str, candidates, cutoff: float = 0.75) -> str:
        close = get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
        return f' (did you mean "{close[0]}"?)' if close else ""

    def check_body(self, node: Block, schema: dict, path: str, file: str, address: str,
                   meta_args: set[str] = frozenset(), meta_blocks: set[str] = frozenset()) -> None:
        attrs = schema.get("attributes", {})
        blocks = schema.get("block_types", {})
        at = f"{path}: " if path else ""
        known = set(attrs) | set(blocks)

        for a in node.attrs.values():
            if a.name in meta_args:
                continue
            if a.name in attrs:
                spec = attrs[a.name]
                if spec.get("computed") and not (spec.get("optional") or spec.get("required")):
                    self.report(file, a.line, address, f'{at}"{a.name}" is a read-only attribute and cannot be set')
                    continue
                for err in type_errors(a.value, spec.get("type", "dynamic"), f'{at}"{a.name}"'):
                    self.report(file, a.line, address, err)
            elif a.name in blocks:
                self.report(file, a.line, address, f'{at}"{a.name}" is a block, not an argument: write {a.name} {{ ... }}')
            elif a.name in meta_blocks:
                self.report(file, a.line, address, f'{at}"{a.name}" is a block, not an argument')
            else:
                self.report(file, a.line, address, f'{at}unknown argument "{a.name}"{self.hint(a.name, known)}')

        counts: dict[str, int] = {}
        dynamic: set[str] = set()
        for b in node.blocks:
            if b.type in meta_blocks:
                continue
            if b.type == "dynamic":
                name = b.labels[0] if b.labels else ""
                sub = f"{path}.{name}" if path else name
                if name in blocks:
                    dynamic.add(name)
                    self.check_dynamic(b, blocks[name]["block"], sub, file, address)
                elif name in attrs:
                    self.report(file, b.line, address, f'{at}"{name}" is an argument, not a block: dynamic "{name}" cannot set it')
                else:
                    self.report(file, b.line, address, f'{at}unknown block type "{name}" in dynamic "{name}"{self.hint(name, blocks)}')
                continue
            sub = f"{path}.{b.type}" if path else b.type
            if b.type in blocks:
                counts[b.type] = counts.get(b.type, 0) + 1
                spec = blocks[b.type]
                if counts[b.type] == 2 and (spec.get("max_items") == 1 or spec.get("nesting_mode") == "single"):
                    self.report(file, b.line, address, f'{at}at most one "{b.type}" block is allowed')
                self.check_body(b, spec["block"], sub, file, address)
            elif b.type in attrs:
                self.report(file, b.line, address, f'{at}"{b.type}" is an argument, not a block: write {b.type} = ...')
            else:
                self.report(file, b.line, address, f'{at}unknown block type "{b.type}"{self.hint(b.type, blocks)}')

        for name, spec in sorted(attrs.items()):
            if spec.get("required") and name not in node.attrs:
                self.report(file, node.line, address, f'{at}missing required argument "{name}"')
        for name, spec in sorted(blocks.items()):
            if spec.get("min_items", 0) >= 1 and not counts.get(name) and name not in dynamic:
                self.report(file, node.line, address, f'{at}missing required block "{name}"')

    def check_dynamic(self, node: Block, schema: dict, path: str, file: str, address: str) -> None:
        for a in node.attrs.values():
            if a.name not in DYNAMIC_ARGS:
                self.report(file, a.line, address, f'dynamic "{path}": unknown argument "{a.name}" (for_each, iterator, labels, content {{}})')
        if "for_each" not in node.attrs:
            self.report(file, node.line, address, f'dynamic "{path}": missing required argument "for_each"')
        contents = node.children("content")
        for b in node.blocks:
            if b.type != "content":
                self.report(file, b.line, address, f'dynamic "{path}": unknown block type "{b.type}" (only content {{}})')
        if len(contents) != 1:
            self.report(file, node.line, address, f'dynamic "{path}": needs exactly one content block, has {len(contents)}')
        for c in contents:
            self.check_body(c, schema, path, file, address)

    def check_lifecycle(self, node: Block, schema: dict, file: str, address: str, managed: bool) -> None:
        allowed = LIFECYCLE_ARGS if managed else set()
        for a in node.attrs.values():
            if a.name not in allowed:
                self.report(file, a.line, address, f'lifecycle: unknown argument "{a.name}"')
        for b in node.blocks:
            if b.type not in LIFECYCLE_BLOCKS:
                self.report(file, b.line, address, f'lifecycle: unknown block type "{b.type}"')
        ignore = node.attrs.get("ignore_changes")
        if ignore is None or not isinstance(ignore.value, list):
            return  # `all`, or an expression
        for item in ignore.value:
            text = item[2:-1] if isinstance(item, str) and item.startswith("${") else item
            if not isinstance(text, str):
                continue
            self.check_traversal(text, schema, file, ignore.line, address)

    def check_traversal(self, text: str, schema: dict, file: str, line: int, address: str) -> None:
        """An ignore_changes path (template[0].containers[0].image) against the schema."""
        steps = re.findall(r'(?:^|\.)([A-Za-z_][A-Za-z0-9_-]*)|\[[^\]]*\]', text)
        block, walked = schema, []
        for step in steps:
            if not step:
                continue  # an index
            attrs, blocks = block.get("attributes", {}), block.get("block_types", {})
            walked.append(step)
            if step in blocks:
                block = blocks[step]["block"]
                continue
            if step not in attrs:
                self.report(file, line, address,
                            f'lifecycle.ignore_changes: no argument or block "{".".join(walked)}"'
                            f'{self.hint(step, set(attrs) | set(blocks))}')
            return

    def check_resource(self, node: Block, kind: str, file: str, module: Module) -> None:
        if len(node.labels) != 2:
            self.report(file, node.line, kind, f"{kind} block needs two labels, has {node.labels}")
            return
        rtype, name = node.labels
        address = f"{rtype}.{name}" if kind == "resource" else f"data.{rtype}.{name}"
        self.checked += 1
        local = rtype.split("_", 1)[0]
        prov = node.attrs.get("provider")
        if prov is not None and isinstance(prov.value, str):
            local = prov.value.removeprefix("${").removesuffix("}").split(".", 1)[0]
        source = module.source_of(local)
        schema = self.schemas.get(source)
        if schema is None:
            self.report(file, node.line, address, f'no pinned schema for provider "{source}" (add it to PROVIDERS in terraform/schema_check.py)')
            return
        table = schema.resources if kind == "resource" else schema.data_sources
        if rtype not in table:
            what = "resource type" if kind == "resource" else "data source"
            self.report(file, node.line, address,
                        f'{source} {schema.version} has no {what} "{rtype}"{self.hint(rtype, table, 0.85)}')
            return
        body = table[rtype]["block"]
        if "count" in node.attrs and "for_each" in node.attrs:
            self.report(file, node.attrs["for_each"].line, address, '"count" and "for_each" cannot both be set')
        meta_blocks = RESOURCE_META_BLOCKS if kind == "resource" else DATA_META_BLOCKS
        lifecycles = node.children("lifecycle")
        if len(lifecycles) > 1:
            self.report(file, lifecycles[1].line, address, 'at most one "lifecycle" block is allowed')
        for lc in lifecycles:
            self.check_lifecycle(lc, body, file, address, kind == "resource")
        self.check_body(node, body, "", file, address, RESOURCE_META, meta_blocks)

    def check_provider(self, node: Block, file: str, module: Module) -> None:
        local = node.labels[0] if node.labels else ""
        source = module.source_of(local)
        schema = self.schemas.get(source)
        address = f"provider.{local}"
        if schema is None:
            self.report(file, node.line, address, f'no pinned schema for provider "{source}" (add it to PROVIDERS in terraform/schema_check.py)')
            return
        self.checked += 1
        self.check_body(node, schema.provider.get("block", {}), "", file, address, {"alias", "version"})

    def check_required_providers(self, module: Module) -> None:
        for local, (source, constraint, file, line) in module.required.items():
            schema = self.schemas.get(source)
            if schema is None or not constraint:
                continue
            if not admits(constraint, schema.version):
                self.report(file, line, f"required_providers.{local}",
                            f'version "{constraint}" does not admit {schema.version}, the version whose schema is checked '
                            f"({schema.package}); pin another package in PROVIDERS (terraform/schema_check.py)")


# --- Modules and version constraints ------------------------------------------------------------


@dataclass
class Module:
    path: Path
    files: list[tuple[str, Block]] = field(default_factory=list)
    # local name → (source, version constraint, file, line)
    required: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)

    def source_of(self, local: str) -> str:
        if local in self.required:
            return self.required[local][0]
        return f"hashicorp/{local}"


def normalize_source(source: str) -> str:
    source = source.strip().lower()
    return source.removeprefix("registry.terraform.io/")


def read_required_providers(module: Module) -> None:
    for file, root in module.files:
        for tf in root.children("terraform"):
            for rp in tf.children("required_providers"):
                for name, a in rp.attrs.items():
                    v = a.value
                    if isinstance(v, dict):
                        source = str(v.get("source", f'"hashicorp/{name}"')).strip('"')
                        version = str(v.get("version", '""')).strip('"')
                    else:
                        source, version = f"hashicorp/{name}", str(v).strip('"')
                    module.required[name] = (normalize_source(source), version, file, a.line)


def parse_version(v: str) -> tuple[int, ...]:
    nums = re.match(r"v?(\d+(?:\.\d+)*)", v.strip())
    return tuple(int(x) for x in nums.group(1).split(".")) if nums else ()


def admits(constraint: str, version: str) -> bool:
    """Terraform's version constraint syntax: = != > >= < <= ~>, comma-separated, all must hold."""
    have = parse_version(version)
    for part in constraint.split(","):
        m = re.match(r"\s*(=|!=|>=|<=|>|<|~>)?\s*(\S+)\s*$", part)
        if not m:
            continue
        op, want_text = m.group(1) or "=", m.group(2)
        want = parse_version(want_text)
        width = max(len(have), len(want), 3)
        h = have + (0,) * (width - len(have))
        w = want + (0,) * (width - len(want))
        ok = {
            "=": h == w, "!=": h != w, ">": h > w, ">=": h >= w, "<": h < w, "<=": h <= w,
        }.get(op)
        if op == "~>":
            # ~> 6.20 → >= 6.20, < 7.0; ~> 6.20.1 → >= 6.20.1, < 6.21.0
            prefix = max(len(want) - 1, 1)
            ok = h >= w and h[: prefix] == w[: prefix]
        if not ok:
            return False
    return True


def collect(paths: list[Path]) -> dict[Path, list[Path]]:
    """The .tf files of PATHs, grouped by directory (one Terraform module each)."""
    by_dir: dict[Path, list[Path]] = {}
    for p in paths:
        if p.is_file():
            files = [p]
        else:
            files = [f for f in sorted(p.rglob("*.tf")) if not any(part.startswith(".") for part in f.relative_to(p).parts)]
        for f in files:
            by_dir.setdefault(f.parent, []).append(f)
    return by_dir


def shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path.resolve()) if rel.startswith("..") else rel


def run(paths: list[Path], specs: dict[str, str]) -> tuple[list[Finding], int, dict[str, Schema]]:
    modules = []
    findings: list[Finding] = []
    for directory, files in sorted(collect(paths).items()):
        module = Module(directory)
        for f in files:
            try:
                module.files.append((shown(f), parse_file(f)))
            except Exception as e:  # noqa: BLE001 - any parse error is a finding
                findings.append(Finding(shown(f), 0, "file", f"cannot parse: {str(e).splitlines()[0] if str(e) else e!r}"))
        read_required_providers(module)
        modules.append(module)

    # Only the schemas this configuration uses are loaded (each one downloaded once).
    wanted = set()
    for module in modules:
        wanted.update(src for src, *_ in module.required.values())
        for _file, root in module.files:
            for node in root.children("resource") + root.children("data") + [
                d for c in root.children("check") for d in c.children("data")
            ]:
                if node.labels:
                    local = node.labels[0].split("_", 1)[0]
                    prov = node.attrs.get("provider")
                    if prov is not None and isinstance(prov.value, str):
                        local = prov.value.removeprefix("${").removesuffix("}").split(".", 1)[0]
                    wanted.add(module.source_of(local))
            for node in root.children("provider"):
                if node.labels:
                    wanted.add(module.source_of(node.labels[0]))
    schemas = {src: load_schema(specs[src]) for src in sorted(wanted) if src in specs}

    checker = Checker(schemas)
    checker.findings = findings
    for module in modules:
        checker.check_required_providers(module)
        for file, root in module.files:
            for node in root.children("resource"):
                checker.check_resource(node, "resource", file, module)
            for node in root.children("data"):
                checker.check_resource(node, "data", file, module)
            for check in root.children("check"):
                for node in check.children("data"):
                    checker.check_resource(node, "data", file, module)
            for node in root.children("provider"):
                checker.check_provider(node, file, module)
    checker.findings.sort(key=lambda f: (f.file, f.line, f.address, f.message))
    return checker.findings, checker.checked, schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help=".tf files or directories (default: terraform/)")
    parser.add_argument("--fetch", action="store_true", help="only make sure every pinned schema is cached")
    parser.add_argument("--package", action="append", default=[], metavar="@cdktf/provider-NAME@VERSION",
                        help="use this bindings package for its provider instead of the pinned one")
    args = parser.parse_args(argv)

    specs = dict(PROVIDERS)
    for spec in args.package:
        name, _version = split_spec(spec)
        source = next((s for s, p in PROVIDERS.items() if split_spec(p)[0] == name), None)
        if source is None:
            parser.error(f"{spec}: not the package of a provider in PROVIDERS")
        specs[source] = spec

    if args.fetch:
        for spec in specs.values():
            ensure_schema(spec)
        return 0

    started = time.monotonic()
    findings, checked, schemas = run(args.paths or [TF], specs)
    for f in findings:
        print(f)
    versions = ", ".join(f"{s.source} {s.version}" for s in schemas.values())
    summary = f"{checked} resource, data and provider blocks checked against {versions or 'no schema'} in {time.monotonic() - started:.1f} s"
    if findings:
        print(f"schema_check: {len(findings)} finding(s); {summary}", file=sys.stderr)
        return 1
    print(f"schema_check: no findings; {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
