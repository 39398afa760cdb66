"""``trtflow <stage> …`` / ``python -m trtflow <stage> …``: every stage without Snakemake.

The subcommands are generated from the stage table (``trtflow.core.commands.STAGES``) and the
stage functions' signatures: one flag per parameter (``image_size`` -> ``--image-size``), its
type, default and whether it is required from the signature, its help (and choices) from the
config schema key it mirrors, else from the docstring. A manifest's ``command`` is written from
the same table, so it is a line of this CLI.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trtflow.core.commands import BY_COMMAND, STAGES, Stage, cli_parameters, schema_entry
from trtflow.core.runner import run_stage

#: Keys of a stage's result left out of what the CLI prints (long lists).
QUIET = ("steps", "latencies_ms", "stats", "history", "exports", "layers")
LISTS = (list, tuple, Sequence, Iterable, set, frozenset)


def _int_or_str(value: str) -> int | str:
    """``--batch dynamic`` or ``--batch 4``."""
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _key_value(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def kind_of(annotation: Any) -> tuple[str, Any]:
    """(kind, element type) of a parameter annotation: bool, int, float, str, int|str, list,
    dict or any."""
    members = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
    origins = [typing.get_origin(a) or a for a in members]
    if any(o in (dict, Mapping) for o in origins):
        return "dict", None
    for a, o in zip(members, origins, strict=True):
        if o in LISTS:
            args = typing.get_args(a)
            return "list", kind_of(args[0])[0] if args else "str"
    names = set(origins)
    if names == {bool}:
        return "bool", None
    if names == {int, str}:
        return "int|str", None
    if names == {int}:
        return "int", None
    if names == {float} or names == {int, float}:
        return "float", None
    if names <= {str, Path}:
        return "str", None
    return "any", None


TYPES = {"int": int, "float": float, "str": str, "int|str": _int_or_str}


def _schema() -> dict[str, Any]:
    from trtflow.core.config import load_schema

    return load_schema()


def _doc_help(doc: str, name: str) -> str:
    """The docstring sentence that names ``name`` (``name``), else ''."""
    text = " ".join(doc.split("\n\n", 1)[-1].split()) if "\n\n" in doc else ""
    for sentence in re.split(r"(?<=[.;])\s+", text):
        if f"``{name}``" in sentence:
            return sentence.replace("``", "")
    return ""


def add_stage_parser(sub: Any, stage: Stage, schema: dict[str, Any]) -> argparse.ArgumentParser:
    func = stage.load()
    doc = inspect.getdoc(func) or ""
    s = sub.add_parser(
        stage.command,
        aliases=list(stage.command_aliases),
        help=doc.split("\n\n")[0].replace("``", "").split(". ")[0],
        description=f"{doc}\n\nRule(s): {', '.join(stage.rules)}; function {stage.function}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults: dict[str, Any] = {}  # of list and mapping flags, filled in after parsing
    s.set_defaults(stage=stage, list_defaults=defaults)
    hints = typing.get_type_hints(func)
    for p in cli_parameters(stage):
        kind, element = kind_of(hints.get(p.name, Any))
        flags = [stage.flag(p.name), *stage.aliases.get(p.name, ())]
        default = None if p.default is inspect.Parameter.empty else p.default
        entry = schema_entry(schema, stage.schema[p.name]) if p.name in stage.schema else {}
        helptext = entry.get("description", "") or _doc_help(doc, p.name)
        annotation = hints.get(p.name, Any)
        optional = type(None) in typing.get_args(annotation)  # ``X | None``: may be left out
        required = (
            p.default is inspect.Parameter.empty and p.name not in stage.derived and not optional
        )
        if required and "default" in entry:  # the schema is the one home of a knob's default
            default, required = entry["default"], False
        kw: dict[str, Any] = {"dest": p.name, "default": default}
        if p.name in stage.derived:
            helptext += f" (default: {stage.derived[p.name]})"
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "list":  # repeatable: --x a b --x c; the default stands until given
            kw.update(nargs="*", action="extend", type=TYPES.get(element, str), default=None)
            defaults[p.name] = list(default or ())
            enum = entry.get("items", {})
            if "$ref" in enum:
                enum = schema_entry(schema, enum["$ref"].rsplit("/", 1)[-1])
            if enum.get("enum") and p.name not in stage.split_commas:
                kw["choices"] = enum["enum"]
        elif kind == "dict":
            kw.update(nargs="*", action="extend", type=_key_value, metavar="KEY=VALUE")
            kw["default"] = None
            defaults[p.name] = default
            helptext += " (KEY=VALUE, values JSON)"
        else:
            kw["type"] = TYPES.get(kind, str)
            if entry.get("enum"):
                kw["choices"] = [c for c in entry["enum"] if c is not None]
        if kind != "bool":
            kw["required"] = required
        if default not in (None, (), [], {}) and kind != "bool":
            helptext += f" (default: {default})"
        s.add_argument(*flags, help=helptext.strip().replace("%", "%%") or None, **kw)
    return s


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI; with ``argv``, only the subcommand it names is built in full (imports one stage
    module, not all)."""
    words = set(sys.argv[1:] if argv is None else argv)
    chosen = {s.command for s in STAGES if words & {s.command, *s.command_aliases}}
    p = argparse.ArgumentParser(prog="trtflow", description=__doc__)
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument("--debug", action="store_true", help="print tracebacks on stderr too")
    sub = p.add_subparsers(dest="command", required=True)
    schema = _schema()
    for stage in STAGES:
        if chosen and stage.command not in chosen:
            sub.add_parser(stage.command, aliases=list(stage.command_aliases))
        else:
            add_stage_parser(sub, stage, schema)
    sub.add_parser("patches", help="list the available patches")
    s = sub.add_parser("validate-config", help="validate a config file against the schema")
    s.add_argument("config")
    return p


def stage_arguments(stage: Stage, ns: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the stage function from the parsed flags."""
    func = stage.load()
    hints = typing.get_type_hints(func)
    kwargs: dict[str, Any] = {}
    for p in cli_parameters(stage):
        value = getattr(ns, p.name)
        if value is None and p.name in ns.list_defaults:
            value = ns.list_defaults[p.name]
        kind, _ = kind_of(hints.get(p.name, Any))
        if kind == "dict" and value is not None and not isinstance(value, Mapping):
            value = dict(value)
        if p.name in stage.split_commas and value:
            value = [w for v in value for w in str(v).split(",") if w]
        kwargs[p.name] = value
    for name, fmt in stage.derived.items():
        if kwargs.get(name) is None:
            kwargs[name] = fmt.format(**kwargs)
    if stage.resolve:
        import importlib

        module, _, name = stage.resolve.partition(":")
        kwargs = getattr(importlib.import_module(module), name)(stage, kwargs)
    return kwargs


def load_configs(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Config files merged in order (later keys win, mappings merged), as Snakemake merges
    ``configfile:`` and ``--configfile``, then the ``KEY=VALUE`` items (Snakemake's ``--config``
    overrides; VALUE JSON or YAML) merged over them, then validated."""
    from trtflow.core.config import config_override, read_yaml, validate_config

    def merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            nested = isinstance(v, Mapping) and isinstance(out.get(k), dict)
            out[k] = merge(out[k], v) if nested else v
        return out

    merged: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for item in map(str, paths):
        override = config_override(item)
        if override is None:
            merged = merge(merged, read_yaml(item) or {})
        else:
            overrides = merge(overrides, dict([override]))
    return validate_config(merge(merged, overrides), source=", ".join(map(str, paths)))


def resolve_target(stage: Stage, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``--config`` + ``--target`` -> the target's spec (and the parity tolerance table)."""
    from trtflow.trt.targets import target_spec

    config = load_configs(kwargs.get("config") or ["config.yaml"])
    kwargs["spec"] = target_spec(config["targets"], kwargs["target"])
    params = inspect.signature(stage.load()).parameters
    if "tolerance" in params:
        kwargs["tolerance"] = config["engine"]["parity"]["tolerance"]
    return kwargs


def dispatch(args: argparse.Namespace) -> Any:
    stage = getattr(args, "stage", None)
    if stage is not None:
        return stage.load()(**stage_arguments(stage, args))
    if args.command == "patches":
        from trtflow.onnx.patches.registry import describe_patches

        for name, doc in describe_patches().items():
            print(f"{name:18s} {doc}")
        return None
    if args.command == "validate-config":
        from trtflow.core.config import load_config

        load_config(args.config)
        print(f"{args.config}: valid")
        return None
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser(argv).parse_args(argv)
    result = run_stage(lambda: dispatch(args), args.log, debug=args.debug)
    if isinstance(result, dict):
        json.dump({k: v for k, v in result.items() if k not in QUIET}, sys.stdout, indent=2,
                  default=str)  # fmt: skip
        print()
    elif isinstance(result, (str, Path)):
        print(result)


__all__ = ["BY_COMMAND", "dispatch", "main"]
