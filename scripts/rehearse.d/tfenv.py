"""The environment Terraform gives each Cloud Run service and the ops job, read from terraform/.

Parses the HCL with python-hcl2 (as terraform/tests/conftest.py does) and evaluates the
expressions that make each container's `env` (static blocks and `dynamic "env"` over maps,
merges, conditionals, for-expressions, locals, variables with their defaults, module inputs and
outputs, resources' own arguments) down to strings. Secrets (`value_source.secret_key_ref`) are
followed to the `google_secret_manager_secret_version` that holds them and its `secret_data`
evaluated the same way.

What only a real project has (a computed attribute: Memorystore's IP, port, AUTH string and CA,
Cloud SQL's private IP and CA, generated passwords, the project id) is taken from SUBSTITUTES
below, as a value or a marker the rehearsal replaces with its local engines' values. Any other
computed value that reaches an environment variable is reported as unfillable, and the rehearsal
fails on it: Terraform gives the service something the rehearsal cannot stand in for.

Usage: tfenv.py TERRAFORM_DIR [--project ID]  → JSON on stdout:
  {"project": ..., "services": {NAME: {"env": {VAR: {"value", "secret", "substituted"}},
   "unfillable": {VAR: reason}, "container_port", "startup_probe", "liveness_probe"}},
   "jobs": {NAME: {... same, "command", "args"}}}
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import string
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)

# Markers the rehearsal replaces per instance (scripts/rehearse): the engines' ports, the
# database host, and the CA PEMs it makes.
REDIS_PORT = "__REDIS_PORT__"
REDIS_CA = "__REDIS_CA_PEM__"
REDIS_AUTH = "__REDIS_AUTH__"
CLOUDSQL_HOST = "__CLOUDSQL_HOST__"
CLOUDSQL_CA = "__CLOUDSQL_CA_PEM__"

# "resource_type.attribute" -> (value, why). Computed attributes only a real project has.
SUBSTITUTES: dict[str, tuple[Any, str]] = {
    "google_redis_instance.host": ("127.0.0.1", "Memorystore's IP: the local Redis"),
    "google_redis_instance.port": (REDIS_PORT, "Memorystore's port: the local Redis' port"),
    "google_redis_instance.auth_string": (REDIS_AUTH, "Memorystore's AUTH string: the local Redis' requirepass"),
    "google_redis_instance.server_ca_certs": ([{"cert": REDIS_CA}], "Memorystore's server CA: the rehearsal's per-instance CA"),
    "google_sql_database_instance.private_ip_address": (CLOUDSQL_HOST, "Cloud SQL's private IP (and port 5432): the local PostgreSQL"),
    "google_sql_database_instance.server_ca_cert": ([{"cert": CLOUDSQL_CA}], "Cloud SQL's server CA: the rehearsal's CA"),
    "data.google_sql_ca_certs.certs": ([{"cert": CLOUDSQL_CA}], "Cloud SQL's server CAs: the rehearsal's CA"),
}


class Unknown:
    """A value known only after apply, with what it came from."""

    def __init__(self, ref: str):
        self.ref = ref

    def __repr__(self) -> str:
        return f"(known after apply: {self.ref})"


class SecretRef:
    """A Secret Manager secret (google_secret_manager_secret instance)."""

    def __init__(self, inst: "Instance"):
        self.inst = inst

    def key(self):
        return (id(self.inst.scope), self.inst.rtype, self.inst.rname, self.inst.key)

    def __repr__(self) -> str:
        return f"secret {self.inst.label()}"


class VersionRef:
    """A secret version (google_secret_manager_secret_version instance) used as `version`."""

    def __init__(self, inst: "Instance"):
        self.inst = inst

    def __repr__(self) -> str:
        return f"version {self.inst.label()}"


class Instance:
    """One instance of a resource (for_each key / count index / single)."""

    def __init__(self, scope: "Scope", rtype: str, rname: str, key: Any = None, each: Any = None):
        self.scope, self.rtype, self.rname, self.key, self.each = scope, rtype, rname, key, each

    def label(self) -> str:
        k = "" if self.key is None else f"[{self.key!r}]"
        return f"{self.scope.label}{self.rtype}.{self.rname}{k}"

    def body(self) -> dict:
        return self.scope.module.resources[(self.rtype, self.rname)]

    def bindings(self) -> dict:
        b = {}
        if self.key is not None:
            b["each"] = {"key": self.key, "value": self.each}
            b["count"] = {"index": self.key}
        return b


DRY = Unknown("(a branch not taken)")


def has_unknown(v: Any) -> list[str]:
    if isinstance(v, Unknown):
        return [v.ref]
    if isinstance(v, dict):
        return [r for x in v.values() for r in has_unknown(x)]
    if isinstance(v, list):
        return [r for x in v for r in has_unknown(x)]
    return []


# --- HCL modules -------------------------------------------------------------------------------


class Module:
    def __init__(self, path: Path):
        self.path = path
        self.resources: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.calls: dict[str, dict] = {}
        for tf in sorted(path.glob("*.tf")):
            with tf.open(encoding="utf-8") as f:
                doc = hcl2.load(f, serialization_options=OPTIONS)
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(rtype, name)] = body
            for block in doc.get("data", []):
                for dtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(f"data.{dtype}", name)] = body
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("module", []):
                self.calls.update(block)


MODULES: dict[Path, Module] = {}


def module_at(path: Path) -> Module:
    path = path.resolve()
    if path not in MODULES:
        MODULES[path] = Module(path)
    return MODULES[path]


class Scope:
    def __init__(self, module: Module, inputs: dict[str, Any] | None, parent: "Scope | None", label: str,
                 root_vars: dict[str, Any] | None = None):
        self.module, self.inputs, self.parent, self.label = module, inputs, parent, label
        self.root_vars = root_vars or {}
        self._locals: dict[str, Any] = {}
        self._vars: dict[str, Any] = {}
        self._children: dict[str, Scope] = {}
        self._resources: dict[tuple[str, str], Any] = {}

    def var(self, name: str) -> Any:
        if name in self._vars:
            return self._vars[name]
        decl = self.module.variables.get(name, {})
        if self.inputs is not None and name in self.inputs:
            val = self.parent.eval(self.inputs[name])
        elif self.inputs is None and name in self.root_vars:
            val = self.root_vars[name]
        elif "default" in decl:
            val = self.eval(decl["default"])
        else:
            val = Unknown(f"{self.label}var.{name} (no value, no default)")
        if "type" in decl and not isinstance(val, Unknown):
            val = apply_type(self.eval_type(decl["type"]), val)
        self._vars[name] = val
        return val

    def local(self, name: str) -> Any:
        if name not in self._locals:
            if name not in self.module.locals:
                raise EvalError(f"{self.label}local.{name} is not defined")
            self._locals[name] = self.eval(self.module.locals[name])
        return self._locals[name]

    def child(self, name: str) -> "Scope":
        if name not in self._children:
            call = self.module.calls[name]
            src = self.eval(call["source"])
            inputs = {k: v for k, v in call.items() if k not in ("source", "depends_on", "providers", "count", "for_each", "version")}
            self._children[name] = Scope(module_at(self.module.path / src), inputs, self, f"{self.label}module.{name}.")
        return self._children[name]

    def resource(self, rtype: str, rname: str) -> Any:
        k = (rtype, rname)
        if k not in self._resources:
            body = self.module.resources[k]
            if "for_each" in body:
                fe = self.eval(body["for_each"])
                if isinstance(fe, Unknown):
                    self._resources[k] = fe
                elif isinstance(fe, list):
                    self._resources[k] = {x: Instance(self, rtype, rname, x, x) for x in fe}
                else:
                    self._resources[k] = {kk: Instance(self, rtype, rname, kk, vv) for kk, vv in fe.items()}
            elif "count" in body:
                n = self.eval(body["count"])
                self._resources[k] = n if isinstance(n, Unknown) else [Instance(self, rtype, rname, i) for i in range(int(n))]
            else:
                self._resources[k] = Instance(self, rtype, rname)
        return self._resources[k]

    def eval(self, v: Any, bindings: dict | None = None) -> Any:
        return Evaluator(self, bindings or {}).value(v)

    def eval_type(self, v: Any) -> Any:
        return Evaluator(self, {}, types=True).value(v)


# --- Types (for optional() defaults) -------------------------------------------------------------


class T:
    def __init__(self, kind: str, arg: Any = None, default: Any = None):
        self.kind, self.arg, self.default = kind, arg, default


def apply_type(t: Any, v: Any) -> Any:
    if not isinstance(t, T) or v is None or isinstance(v, Unknown):
        return v
    if t.kind == "optional":
        return apply_type(t.arg, v)
    if t.kind == "object" and isinstance(v, dict):
        out = dict(v)
        for name, at in t.arg.items():
            if name not in out or out[name] is None:
                if isinstance(at, T) and at.kind == "optional":
                    out[name] = apply_type(at.arg, at.default)
                else:
                    out[name] = None
            else:
                out[name] = apply_type(at, out[name])
        return out
    if t.kind == "map" and isinstance(v, dict):
        return {k: apply_type(t.arg, x) for k, x in v.items()}
    if t.kind in ("list", "set") and isinstance(v, list):
        return [apply_type(t.arg, x) for x in v]
    if t.kind == "string" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return tf_str(v)
    return v


# --- Expressions ---------------------------------------------------------------------------------


class EvalError(Exception):
    pass


def tf_str(v: Any) -> Any:
    if isinstance(v, Unknown):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (SecretRef, VersionRef)):
        return Unknown(repr(v))
    if v is None:
        return ""
    if isinstance(v, (dict, list, Instance)):
        raise EvalError(f"cannot use {type(v).__name__} as a string")
    return str(v)


def tf_num(v: Any) -> Any:
    if isinstance(v, Unknown) or isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise EvalError(f"not a number: {v!r}") from None
    return int(f) if f.is_integer() else f


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class Evaluator:
    """A recursive-descent parser and evaluator of HCL expressions and templates."""

    def __init__(self, scope: Scope, bindings: dict, types: bool = False, dry: bool = False):
        self.scope, self.bindings, self.types, self.dry = scope, bindings, types, dry

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.template(v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v

    # A string: literal text with ${...} interpolations (one alone keeps its type).
    def template(self, s: str) -> Any:
        parts: list[Any] = []
        i, lit = 0, []
        while i < len(s):
            if s.startswith("$${", i):
                lit.append("${"); i += 3
            elif s.startswith("${", i):
                if lit:
                    parts.append("".join(lit)); lit = []
                p = Parser(s, i + 2, self)
                val = p.expr()
                p.ws()
                if p.peek() != "}":
                    raise EvalError(f"expected }} at {p.i} in {s!r}")
                parts.append(val)
                i = p.i + 1
            else:
                lit.append(s[i]); i += 1
        if lit:
            parts.append("".join(lit))
        if len(parts) == 1 and not isinstance(parts[0], str):
            return parts[0]
        return concat_str(parts)


def concat_str(parts: list[Any]) -> Any:
    out = []
    for p in parts:
        sp = tf_str(p)
        if isinstance(sp, Unknown):
            return sp
        out.append(sp)
    return "".join(out)


class Parser:
    def __init__(self, s: str, i: int, ev: Evaluator):
        self.s, self.i, self.ev = s, i, ev

    # -- lexing helpers
    def ws(self):
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif self.s.startswith("#", self.i) or self.s.startswith("//", self.i):
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            elif self.s.startswith("/*", self.i):
                self.i = self.s.index("*/", self.i) + 2
            else:
                break

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def eat(self, tok: str) -> bool:
        self.ws()
        if self.s.startswith(tok, self.i):
            if tok[-1].isalnum() and self.i + len(tok) < len(self.s) and (self.s[self.i + len(tok)].isalnum() or self.s[self.i + len(tok)] == "_"):
                return False
            self.i += len(tok)
            return True
        return False

    def expect(self, tok: str):
        if not self.eat(tok):
            raise EvalError(f"expected {tok!r} at {self.i} in {self.s!r}")

    def ident(self) -> str | None:
        self.ws()
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*").match(self.s, self.i)
        if not m:
            return None
        self.i = m.end()
        return m.group(0)

    # -- grammar
    def expr(self) -> Any:
        cond = self.binary(0)
        if self.eat("?"):
            # As Terraform does, only the branch taken is evaluated (the other may index an
            # empty list, e.g. a resource with count = 0): the other is parsed dry.
            known = not isinstance(cond, Unknown)
            a = self.branch(known and bool(cond))
            self.expect(":")
            b = self.branch(known and not cond)
            if not known:
                return cond
            return a if cond else b
        return cond

    def branch(self, taken: bool) -> Any:
        if taken or self.ev.dry:
            return self.expr()
        p = Parser(self.s, self.i, Evaluator(self.ev.scope, self.ev.bindings, self.ev.types, dry=True))
        v = p.expr()
        self.i = p.i
        return v

    LEVELS = [["||"], ["&&"], ["==", "!="], ["<=", ">=", "<", ">"], ["+", "-"], ["*", "/", "%"]]

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            self.ws()
            op = next((o for o in self.LEVELS[level] if self.s.startswith(o, self.i)
                       and not (o in "<>" and self.s.startswith(o + "=", self.i))
                       and not (o == "=" and self.s.startswith("=>", self.i))), None)
            if op is None:
                return left
            self.i += len(op)
            right = self.binary(level + 1)
            left = binop(op, left, right)

    def unary(self) -> Any:
        self.ws()
        if self.peek() == "!" and self.peek(2) != "!=":
            self.i += 1
            v = self.unary()
            return v if isinstance(v, Unknown) else not v
        if self.peek() == "-" and not self.s[self.i + 1:self.i + 2].isdigit():
            self.i += 1
            v = self.unary()
            return v if isinstance(v, Unknown) else -tf_num(v)
        return self.postfix(self.primary())

    def postfix(self, v: Any) -> Any:
        while True:
            self.ws()
            if self.s.startswith("[*]", self.i):
                self.i += 3
                rest_start = self.i
                # A splat: apply the rest of the traversal to each element.
                items = v if isinstance(v, list) else ([] if v is None else [v])
                out = []
                end = rest_start
                for item in items:
                    sub = Parser(self.s, rest_start, self.ev)
                    out.append(sub.traversal(item))
                    end = sub.i
                if not items:
                    sub = Parser(self.s, rest_start, self.ev)
                    sub.traversal(None, dry=True)
                    end = sub.i
                self.i = end
                v = out
            elif self.peek() == "[":
                self.i += 1
                k = self.expr()
                self.expect("]")
                v = index(v, k)
            elif self.peek() == "." and not self.s[self.i + 1:self.i + 2].isdigit():
                self.i += 1
                if self.s.startswith("*", self.i):
                    self.i += 1
                    continue
                name = self.ident()
                v = attr(v, name)
            else:
                return v

    def traversal(self, v: Any, dry: bool = False) -> Any:
        while True:
            if self.peek() == ".":
                self.i += 1
                name = self.ident()
                if not dry:
                    v = attr(v, name)
            elif self.peek() == "[" and not self.s.startswith("[*]", self.i):
                self.i += 1
                k = self.expr()
                self.expect("]")
                if not dry:
                    v = index(v, k)
            else:
                return v

    def primary(self) -> Any:
        self.ws()
        c = self.peek()
        if c == "(":
            self.i += 1
            v = self.expr()
            self.expect(")")
            return v
        if c == '"':
            return self.string()
        if c == "{":
            return self.object()
        if c == "[":
            return self.tuple()
        if c == "<" and self.s.startswith("<<", self.i):
            raise EvalError("heredocs are not supported")
        m = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?").match(self.s, self.i)
        if m:
            self.i = m.end()
            return tf_num(m.group(0))
        name = self.ident()
        if name is None:
            raise EvalError(f"unexpected {self.s[self.i:self.i + 20]!r} in {self.s!r}")
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "null":
            return None
        self.ws()
        if self.peek() == "(":
            return self.call(name)
        return self.reference(name)

    def string(self) -> Any:
        self.i += 1
        parts: list[Any] = []
        lit: list[str] = []
        while True:
            c = self.s[self.i]
            if c == "\\":
                nxt = self.s[self.i + 1]
                if nxt == "u":
                    lit.append(chr(int(self.s[self.i + 2:self.i + 6], 16))); self.i += 6
                else:
                    lit.append(ESCAPES.get(nxt, nxt)); self.i += 2
            elif c == '"':
                self.i += 1
                break
            elif self.s.startswith("$${", self.i):
                lit.append("${"); self.i += 3
            elif self.s.startswith("${", self.i):
                if lit:
                    parts.append("".join(lit)); lit = []
                self.i += 2
                parts.append(self.expr())
                self.expect("}")
            else:
                lit.append(c); self.i += 1
        if lit:
            parts.append("".join(lit))
        return concat_str(parts) if parts else ""

    def sep(self):
        self.ws()
        if self.peek() == ",":
            self.i += 1

    def object(self) -> Any:
        self.i += 1
        self.ws()
        if self.s.startswith("for", self.i) and not self.s[self.i + 3].isalnum() and self.s[self.i + 3] != "_":
            return self.for_expr("}")
        out: dict = {}
        unknown = None
        while True:
            self.ws()
            if self.peek() == "}":
                self.i += 1
                return unknown or out
            if self.peek() == '"':
                k = self.string()
            elif self.peek() == "(":
                self.i += 1
                k = self.expr()
                self.expect(")")
            else:
                k = self.ident()
            self.ws()
            if self.peek() in ("=", ":") and self.peek(2) != "==":
                self.i += 1
            else:
                raise EvalError(f"expected = in object at {self.i} in {self.s!r}")
            v = self.expr()
            if isinstance(k, Unknown):
                unknown = k
            else:
                out[k] = v
            self.sep()

    def tuple(self) -> Any:
        self.i += 1
        self.ws()
        if self.s.startswith("for", self.i) and not self.s[self.i + 3].isalnum() and self.s[self.i + 3] != "_":
            return self.for_expr("]")
        out = []
        while True:
            self.ws()
            if self.peek() == "]":
                self.i += 1
                return out
            out.append(self.expr())
            self.sep()

    def for_expr(self, close: str) -> Any:
        self.i += 3
        n1 = self.ident()
        n2 = None
        if self.eat(","):
            n2 = self.ident()
        self.expect("in")
        coll = self.expr()
        self.expect(":")
        body_start = self.i
        end = skip_for_body(self.s, body_start, close)
        self.i = end + 1
        if isinstance(coll, Unknown):
            return coll
        items = list(coll.items()) if isinstance(coll, dict) else list(enumerate(coll or []))
        out_list, out_map = [], {}
        for k, v in items:
            b = dict(self.ev.bindings)
            if n2 is None:
                b[n1] = v
            else:
                b[n1], b[n2] = k, v
            p = Parser(self.s[:end], body_start, Evaluator(self.ev.scope, b, self.ev.types))
            if close == "}":
                kk = p.expr()
                p.expect("=>")
                vv = p.expr()
                grouped = p.eat("...")
                cond = p.expr() if p.eat("if") else True
                if isinstance(cond, Unknown):
                    return cond
                if cond:
                    if grouped:
                        out_map.setdefault(kk, []).append(vv)
                    else:
                        out_map[kk] = vv
            else:
                vv = p.expr()
                cond = p.expr() if p.eat("if") else True
                if isinstance(cond, Unknown):
                    return cond
                if cond:
                    out_list.append(vv)
        return out_map if close == "}" else out_list

    def args(self) -> list[str]:
        """The raw text of each argument of a call (evaluated by the caller, lazily)."""
        self.expect("(")
        spans = []
        while True:
            self.ws()
            if self.peek() == ")":
                self.i += 1
                return spans
            start = self.i
            end = skip_expr(self.s, start)
            spans.append(self.s[start:end])
            self.i = end
            self.ws()
            if self.s.startswith("...", self.i):
                self.i += 3
                spans[-1] = ("...", spans[-1])
            self.sep()

    def sub(self, text: Any) -> Any:
        if isinstance(text, tuple):
            return self.sub(text[1])
        p = Parser(text, 0, self.ev)
        v = p.expr()
        return v

    def call(self, name: str) -> Any:
        raw = self.args()
        if self.ev.dry:
            return DRY
        if self.ev.types:
            return type_call(name, [self.sub(a) if name in ("optional",) and i > 0 else self.type_arg(a) for i, a in enumerate(raw)])
        if name in ("try", "can"):
            for a in raw:
                try:
                    v = self.sub(a)
                    if name == "can":
                        return not isinstance(v, Unknown) or v
                    return v
                except (EvalError, KeyError, IndexError, TypeError, ValueError):
                    if name == "can":
                        return False
            raise EvalError("try: no argument succeeded")
        args = []
        for a in raw:
            v = self.sub(a)
            if isinstance(a, tuple):
                args.extend(v if isinstance(v, list) else [v])
            else:
                args.append(v)
        return function(name, args)

    def type_arg(self, text: Any) -> Any:
        p = Parser(text if isinstance(text, str) else text[1], 0, self.ev)
        return p.expr()

    def reference(self, name: str) -> Any:
        ev, scope = self.ev, self.ev.scope
        if ev.dry:
            return DRY
        if ev.types:
            if name in ("string", "number", "bool", "any"):
                return T(name)
            raise EvalError(f"unknown type {name}")
        if name in ev.bindings:
            return ev.bindings[name]
        nxt = lambda: (self.expect("."), self.ident())[1]  # noqa: E731
        if name == "var":
            return scope.var(nxt())
        if name == "local":
            return scope.local(nxt())
        if name == "module":
            return ModuleRef(scope.child(nxt()))
        if name in ("path", "terraform"):
            return Unknown(f"{name}.{nxt()}")
        if name == "data":
            t = nxt(); n = nxt()
            if (f"data.{t}", n) in scope.module.resources:
                return scope.resource(f"data.{t}", n)
            return Unknown(f"{scope.label}data.{t}.{n}")
        # A resource: TYPE.NAME
        self.ws()
        if self.peek() == ".":
            save = self.i
            rname = nxt()
            if (name, rname) in scope.module.resources:
                return scope.resource(name, rname)
            self.i = save
        raise EvalError(f"unknown reference {name} in {self.s!r}")


class ModuleRef:
    def __init__(self, scope: Scope):
        self.scope = scope


def skip_string(s: str, i: int) -> int:
    i += 1
    while s[i] != '"':
        if s[i] == "\\":
            i += 2
        elif s.startswith("${", i):
            i = skip_braces(s, i + 1)
        else:
            i += 1
    return i + 1


def skip_braces(s: str, i: int) -> int:
    """s[i] is an opening bracket; returns the index after its match."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[s[i]]]
    i += 1
    while stack:
        c = s[i]
        if c == '"':
            i = skip_string(s, i)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
        i += 1
    return i


def skip_expr(s: str, i: int) -> int:
    """The end of one argument: up to a top-level , or ) (or ...)."""
    while i < len(s):
        c = s[i]
        if c == '"':
            i = skip_string(s, i)
        elif c in "([{":
            i = skip_braces(s, i)
        elif c in ",)" or s.startswith("...", i):
            return i
        else:
            i += 1
    return i


def skip_for_body(s: str, i: int, close: str) -> int:
    while True:
        c = s[i]
        if c == '"':
            i = skip_string(s, i)
        elif c in "([{":
            i = skip_braces(s, i)
        elif c == close:
            return i
        else:
            i += 1


def binop(op: str, a: Any, b: Any) -> Any:
    if op == "||":
        if a is True or b is True:
            return True
        return a if isinstance(a, Unknown) else b if isinstance(b, Unknown) else bool(a or b)
    if op == "&&":
        if a is False or b is False:
            return False
        return a if isinstance(a, Unknown) else b if isinstance(b, Unknown) else bool(a and b)
    for x in (a, b):
        if isinstance(x, Unknown):
            return x
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    a, b = tf_num(a), tf_num(b)
    return {"<": lambda: a < b, ">": lambda: a > b, "<=": lambda: a <= b, ">=": lambda: a >= b,
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
            "%": lambda: a % b}[op]()


def index(v: Any, k: Any) -> Any:
    if isinstance(v, Unknown):
        return v
    if isinstance(k, Unknown):
        return k
    if isinstance(v, list):
        return v[int(tf_num(k))]
    if isinstance(v, dict):
        if k not in v and tf_str(k) in v:
            k = tf_str(k)
        if k not in v:
            raise EvalError(f"no key {k!r} in {list(v)}")
        return v[k]
    raise EvalError(f"cannot index {v!r}")


def attr(v: Any, name: str) -> Any:
    if isinstance(v, Unknown):
        return Unknown(f"{v.ref}.{name}")
    if isinstance(v, ModuleRef):
        out = v.scope.module.outputs.get(name)
        if out is None:
            raise EvalError(f"{v.scope.label}: no output {name}")
        return v.scope.eval(out["value"])
    if isinstance(v, Instance):
        return instance_attr(v, name)
    if isinstance(v, dict):
        if name not in v:
            raise EvalError(f"no attribute {name} in {list(v)}")
        return v[name]
    if v is None:
        raise EvalError(f"attribute {name} of null")
    raise EvalError(f"cannot take .{name} of {v!r}")


RANDOM: dict[str, str] = {}


def instance_attr(inst: Instance, name: str) -> Any:
    key = f"{inst.rtype}.{name}"
    if key in SUBSTITUTES:
        return SUBSTITUTES[key][0]
    body = inst.body()
    b = inst.bindings()
    if inst.rtype == "google_secret_manager_secret" and name in ("id", "name", "secret_id"):
        return SecretRef(inst)
    if inst.rtype == "google_secret_manager_secret_version" and name == "version":
        return VersionRef(inst)
    if inst.rtype in ("random_password", "random_string") and name == "result":
        label = inst.label()
        if label not in RANDOM:
            length = int(tf_num(inst.scope.eval(body.get("length", 32), b)))
            special = inst.scope.eval(body.get("special", True), b)
            alphabet = string.ascii_letters + string.digits + ("!@#%&*()-_=+[]{}<>:?" if special else "")
            RANDOM[label] = "".join(secrets.choice(alphabet) for _ in range(length))
        return RANDOM[label]
    if name in body and name not in ("for_each", "count", "depends_on", "lifecycle", "provider"):
        return inst.scope.eval(body[name], b)
    return Unknown(f"{inst.label()}.{name}")


def type_call(name: str, args: list) -> Any:
    if name == "optional":
        return T("optional", args[0], args[1] if len(args) > 1 else None)
    if name == "object":
        return T("object", args[0])
    if name in ("map", "list", "set"):
        return T(name, args[0])
    if name == "tuple":
        return T("tuple", args[0])
    raise EvalError(f"unknown type constructor {name}")


def function(name: str, a: list) -> Any:
    unknowns = [x for x in a if isinstance(x, Unknown)]
    if unknowns and name not in ("merge", "coalesce", "concat", "compact", "length", "keys", "flatten"):
        return unknowns[0]
    if name == "merge":
        out: dict = {}
        for m in a:
            if isinstance(m, Unknown):
                return m
            out.update(m or {})
        return out
    if name == "join":
        parts = a[1]
        if isinstance(parts, Unknown):
            return parts
        return concat_str(list(intersperse(parts, a[0])))
    if name in ("tostring",):
        return tf_str(a[0])
    if name == "tonumber":
        return tf_num(a[0])
    if name == "tobool":
        return a[0] in (True, "true")
    if name in ("toset", "distinct"):
        seen = []
        for x in a[0]:
            if x not in seen:
                seen.append(x)
        return sorted(seen, key=str) if name == "toset" else seen
    if name in ("tolist", "tomap", "nonsensitive", "sensitive"):
        return a[0]
    if name == "concat":
        return [x for lst in a for x in lst]
    if name == "flatten":
        out_l: list = []
        for x in a[0]:
            out_l.extend(function("flatten", [x]) if isinstance(x, list) else [x])
        return out_l
    if name == "range":
        nums = [int(tf_num(x)) for x in a]
        return list(range(*nums))
    if name == "length":
        return a[0] if isinstance(a[0], Unknown) else len(a[0])
    if name == "keys":
        return sorted(a[0].keys())
    if name == "values":
        return [a[0][k] for k in sorted(a[0].keys())]
    if name == "lookup":
        return a[0].get(a[1], a[2] if len(a) > 2 else None)
    if name == "contains":
        return a[1] in a[0]
    if name == "endswith":
        return a[0].endswith(a[1])
    if name == "startswith":
        return a[0].startswith(a[1])
    if name == "urlencode":
        return urllib.parse.quote(tf_str(a[0]), safe="-._~") if a[0] not in (REDIS_AUTH,) else a[0]
    if name == "base64encode":
        return base64.b64encode(tf_str(a[0]).encode()).decode()
    if name == "jsonencode":
        return json.dumps(a[0], separators=(",", ":"))
    if name == "sha256":
        return hashlib.sha256(tf_str(a[0]).encode()).hexdigest()
    if name == "format":
        fmt = a[0]
        vals = iter(a[1:])
        return re.sub(r"%[sdv]", lambda _: tf_str(next(vals)), fmt)
    if name == "upper":
        return a[0].upper()
    if name == "lower":
        return a[0].lower()
    if name == "replace":
        return a[0].replace(a[1], a[2])
    if name == "split":
        return a[1].split(a[0])
    if name == "trimspace":
        return a[0].strip()
    if name == "coalesce":
        return next((x for x in a if x not in (None, "")), None)
    if name == "compact":
        return [x for x in a[0] if x not in (None, "")]
    if name in ("max", "min"):
        return (max if name == "max" else min)(tf_num(x) for x in a)
    if name == "floor":
        import math
        return math.floor(tf_num(a[0]))
    if name == "abs":
        return abs(tf_num(a[0]))
    if name == "one":
        return a[0][0] if a[0] else None
    if name == "element":
        return a[0][int(a[1]) % len(a[0])]
    if name == "zipmap":
        return dict(zip(a[0], a[1]))
    if name == "regex":
        m = re.search(a[0], a[1])
        if not m:
            raise EvalError("regex: no match")
        return m.group(0)
    raise EvalError(f"function {name}() is not supported by the rehearsal's evaluator")


def intersperse(items, sep):
    for i, x in enumerate(items):
        if i:
            yield sep
        yield x


# --- Containers' environment ---------------------------------------------------------------------


def container_env(scope: Scope, container: dict, bindings: dict | None = None) -> dict:
    """NAME -> {"value", "secret", "unknown"} of one container's env blocks, in order."""
    out: dict[str, dict] = {}
    b = bindings or {}

    def add(entry: dict, bb: dict):
        name = scope.eval(entry["name"], bb)
        if "value_source" in entry:
            ref = entry["value_source"][0]["secret_key_ref"][0]
            secret = scope.eval(ref["secret"], bb)
            version = scope.eval(ref.get("version", "latest"), bb)
            val, where = secret_content(secret, version)
            out[name] = {"value": val, "secret": where}
        else:
            out[name] = {"value": scope.eval(entry.get("value", ""), bb), "secret": None}

    for entry in container.get("env", []):
        add(entry, b)
    for dyn in container.get("dynamic", []):
        if "env" not in dyn:
            continue
        d = dyn["env"]
        it = scope.eval(d.get("iterator", "env"), b) if "iterator" in d else "env"
        coll = scope.eval(d["for_each"], b)
        if isinstance(coll, Unknown):
            out[f"(dynamic env over {coll.ref})"] = {"value": coll, "secret": None}
            continue
        items = coll.items() if isinstance(coll, dict) else enumerate(coll)
        for k, v in items:
            for content in d["content"]:
                add(content, {**b, it: {"key": k, "value": v}})
    return out


def secret_content(secret: Any, version: Any) -> tuple[Any, str]:
    if isinstance(secret, Unknown):
        return secret, secret.ref
    if isinstance(version, VersionRef):
        inst = version.inst
        return inst.scope.eval(inst.body()["secret_data"], inst.bindings()), inst.label()
    if not isinstance(secret, SecretRef):
        return Unknown(f"secret {secret!r} (not a google_secret_manager_secret of this configuration)"), str(secret)
    scope = secret.inst.scope
    found = []
    for (rtype, rname) in scope.module.resources:
        if rtype != "google_secret_manager_secret_version":
            continue
        res = scope.resource(rtype, rname)
        insts = list(res.values()) if isinstance(res, dict) else res if isinstance(res, list) else [res]
        for inst in insts:
            s = inst.scope.eval(inst.body()["secret"], inst.bindings())
            if isinstance(s, SecretRef) and s.key() == secret.key():
                found.append(inst)
    if not found:
        return Unknown(f"no version of {secret!r}"), repr(secret)
    inst = found[-1]
    return inst.scope.eval(inst.body()["secret_data"], inst.bindings()), inst.label()


def probe(container: dict, kind: str, scope: Scope) -> dict | None:
    p = container.get(kind)
    if not p:
        return None
    p = scope.eval(p[0])
    get = (p.get("http_get") or [{}])[0]
    return {"path": get.get("path"), "port": get.get("port"), "period_seconds": p.get("period_seconds"),
            "failure_threshold": p.get("failure_threshold"), "timeout_seconds": p.get("timeout_seconds"),
            "initial_delay_seconds": p.get("initial_delay_seconds")}


def finish(env: dict) -> tuple[dict, dict]:
    done, unfillable = {}, {}
    for name, e in env.items():
        val = e["value"]
        refs = has_unknown(val)
        if refs or not isinstance(val, str) and val is not None:
            unfillable[name] = "; ".join(refs) if refs else f"not a string: {val!r}"
            continue
        subs = [why for key, (marker, why) in SUBSTITUTES.items()
                if (isinstance(marker, str) and marker in val) or (isinstance(marker, list) and marker[0]["cert"] in val)]
        if "__REDIS_AUTH__" in val and not any("AUTH" in s for s in subs):
            subs.append(SUBSTITUTES["google_redis_instance.auth_string"][1])
        if e["secret"]:
            subs.append(f"secret content from {e['secret']}")
        done[name] = {"value": val, "secret": e["secret"], "substituted": subs}
    return done, unfillable


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("terraform_dir")
    ap.add_argument("--project", default="tickets-rehearsal")
    args = ap.parse_args()
    tf = Path(args.terraform_dir)
    root_vars: dict[str, Any] = {}
    tfvars = tf / "terraform.tfvars"
    if tfvars.is_file():
        with tfvars.open(encoding="utf-8") as f:
            root_vars.update(hcl2.load(f, serialization_options=OPTIONS))
    root_vars.setdefault("project_id", args.project)
    root = Scope(module_at(tf), None, None, "", root_vars)
    result: dict[str, Any] = {"project": root.var("project_id"), "services": {}, "jobs": {}, "errors": []}

    for call_name, call in root.module.calls.items():
        src = root.eval(call["source"])
        mod = module_at(tf / src)
        services = [(k, b) for k, b in mod.resources.items() if k[0] == "google_cloud_run_v2_service"]
        if not services:
            continue
        scope = root.child(call_name)
        for _, body in services:
            try:
                name = scope.eval(body["name"])
                containers = body["template"][0]["containers"]
                app = next((c for c in containers if c.get("ports")), containers[0])
                env, unfillable = finish(container_env(scope, app))
                port = scope.eval(app["ports"][0].get("container_port", 8080)) if app.get("ports") else 8080
                result["services"][name] = {
                    "module": call_name, "env": env, "unfillable": unfillable, "container_port": port,
                    "startup_probe": probe(app, "startup_probe", scope),
                    "liveness_probe": probe(app, "liveness_probe", scope),
                    "containers": len(containers),
                }
            except (EvalError, KeyError, IndexError, TypeError, ValueError) as e:
                result["errors"].append(f"module.{call_name}: {type(e).__name__}: {e}")

    for (rtype, rname), body in root.module.resources.items():
        if rtype != "google_cloud_run_v2_job":
            continue
        try:
            name = root.eval(body["name"])
            c = body["template"][0]["template"][0]["containers"][0]
            env, unfillable = finish(container_env(root, c))
            result["jobs"][name] = {"resource": f"{rtype}.{rname}", "env": env, "unfillable": unfillable,
                                    "command": root.eval(c.get("command", [])), "args": root.eval(c.get("args", []))}
        except (EvalError, KeyError, IndexError, TypeError, ValueError) as e:
            result["errors"].append(f"{rtype}.{rname}: {type(e).__name__}: {e}")

    json.dump(result, sys.stdout, indent=1, default=repr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
