"""Config validation against schemas/config.schema.yaml with one clear message per mistake.

Pure Python (jsonschema + PyYAML): safe to import from rules/common.smk on any host.

Every ``snakemake`` call (a no-op rerun, and each job's own process) validates the config. A
config that passed once against the same schema with the same jsonschema is remembered by its
digest in ``trtflow/__pycache__/valid-configs.json`` (best effort, as Python's .pyc files), and
then only the defaults and the cross-field checks run: jsonschema, 0.2 s to import, is loaded
only for a config it has not seen or one with a mistake.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Collection
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import jsonschema

from trtflow.core.errors import TrtflowError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


#: libyaml's parser where PyYAML has it (every PyPI wheel does): ~7x faster than the pure-Python
#: one, which matters because every `snakemake` call, a no-op rerun included, reads these files.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        schema: dict[str, Any] = yaml.load(fh, Loader=_SafeLoader)
    return schema


def default_recipe() -> list[str]:
    """The patch recipe a model gets when its config names none (the schema's default)."""
    return list(load_schema()["$defs"]["model"]["properties"]["patches"]["default"])


def _key_path(error: jsonschema.ValidationError) -> str:
    parts: list[str] = []
    for p in error.absolute_path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "array": "a list", "object": "a mapping",
               "null": "null"}  # fmt: skip


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """Return (what is wrong, how to fix it) for one schema violation."""
    v, val, schema = error.validator, error.validator_value, error.schema
    desc = schema.get("description", "").strip() if isinstance(schema, dict) else ""
    hint = f" ({desc})" if desc else ""
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (
            f"unknown key {', '.join(repr(e) for e in extra)}",
            f"remove it or use one of: {', '.join(allowed)}",
        )
    if v == "enum":
        return (
            f"{error.instance!r} is not allowed",
            f"use one of: {', '.join(map(str, val))}{hint}",
        )
    if v == "multipleOf":
        lo = int(error.instance // val * val)
        return (
            f"{error.instance} is not a multiple of {val}",
            f"use a multiple of {val}, e.g. {max(lo, val)} or {lo + val}{hint}",
        )
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return (f"{error.instance!r} is out of range", f"use a value {op} {val}{hint}")
    if v == "type":
        kinds = " or ".join(_TYPE_NAMES.get(t, t) for t in ([val] if isinstance(val, str) else val))
        return (f"{error.instance!r} has the wrong type", f"use {kinds}{hint}")
    if v == "required":
        return (error.message, f"add the key{hint}")
    if v == "oneOf":
        # e.g. batch: "dynamic" or an integer >= 1; report the closest alternative's message
        return (f"{error.instance!r} is not valid", f"{desc or 'see the schema'}")
    if v == "pattern" or error.validator == "propertyNames":
        return (error.message, "use letters, digits, '_', '-', '.' only")
    return (error.message, desc or "see schemas/config.schema.yaml")


def _alternative(sub: dict[str, Any], root: dict[str, Any]) -> str:
    """A oneOf alternative in words: ``dynamic`` / ``an integer >= 1``."""
    if "$ref" in sub:
        sub = root["$defs"][sub["$ref"].split("/")[-1]]
    if "enum" in sub:
        return " or ".join(map(str, sub["enum"]))
    if "const" in sub:
        return str(sub["const"])
    kind = _TYPE_NAMES.get(sub.get("type", ""), "a value")
    bounds = [f">= {sub['minimum']}" if "minimum" in sub else "",
              f"<= {sub['maximum']}" if "maximum" in sub else ""]  # fmt: skip
    return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()


def _set_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Fill defaults of object properties in place (recursively, after validation)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["$defs"][ref]
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _set_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _set_defaults(value, extra, root)


VALID_CACHE = Path(__file__).resolve().parents[1] / "__pycache__" / "valid-configs.json"
_VALID_KEEP = 256  # digests remembered (most recent last)


@cache
def _jsonschema_version() -> str:
    try:
        return metadata.version("jsonschema")
    except metadata.PackageNotFoundError:
        return "unknown"


def _digest(config: dict[str, Any], schema: dict[str, Any]) -> str:
    text = json.dumps([config, schema, _jsonschema_version()], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _valid_digests() -> list[str]:
    try:
        data = json.loads(VALID_CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [d for d in data if isinstance(d, str)] if isinstance(data, list) else []


def _remember_valid(digest: str, known: list[str]) -> None:
    """Write ``known`` (the cache as read) plus ``digest`` to the cache file (atomic replace; a
    read-only install just skips it)."""
    known = [d for d in known if d != digest][-(_VALID_KEEP - 1) :] + [digest]
    tmp = VALID_CACHE.with_name(f".{VALID_CACHE.name}.tmp-{os.getpid()}")
    try:
        VALID_CACHE.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(known), encoding="utf-8")
        tmp.replace(VALID_CACHE)
    except OSError:
        tmp.unlink(missing_ok=True)


def validate_config(
    config: dict[str, Any],
    source: str = "config",
    schema: dict[str, Any] | None = None,
    overridden: Collection[str] = (),
) -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    Raises TrtflowError naming the first offending key (``<source>: models.x.image_sizes[0]: …``).
    ``overridden``: top-level keys that Snakemake's ``--config KEY=VALUE`` set; a mistake under
    one of them names ``--config KEY=…`` as its source, not the config files.
    """
    schema = schema or load_schema()
    digest, known = _digest(config, schema), _valid_digests()
    if digest not in known:
        _check_schema(config, source, schema, overridden)
        _remember_valid(digest, known)
    out = copy.deepcopy(config)
    _set_defaults(out, schema, schema)
    check_cross_fields(out, source)
    return out


def _check_schema(
    config: dict[str, Any], source: str, schema: dict[str, Any], overridden: Collection[str] = ()
) -> None:
    """Raise TrtflowError for the first schema violation of ``config``, if any."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        # descend into oneOf/anyOf to the most specific message
        best = jsonschema.exceptions.best_match([err])
        what, fix = _describe(best if best.validator != "oneOf" else err)
        one_of = best if best.validator == "oneOf" else best.parent
        if one_of is not None and one_of.validator == "oneOf":
            options = [_alternative(sub, schema) for sub in one_of.validator_value]
            what, fix = f"{one_of.instance!r} is not valid", "use " + " or ".join(options)
        top = next(iter(best.absolute_path), None)
        if top in overridden:
            source = f"--config {top}=…"
            if best.validator == "type" and isinstance(best.instance, str):
                fix += (
                    "; Snakemake's --config reads every value inside a mapping or a list as "
                    "a string: give this one in a --configfile instead"
                )
        raise TrtflowError(f"{source}: {_key_path(best)}: {what}", fix)


class _StrictLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last).
    ``name`` is the file's path (libyaml's marks do not carry it)."""

    name = "<config>"


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise TrtflowError(
                f"{loader.name}: line {line}: duplicate key {key!r} (first given at "
                f"line {seen[key]}); YAML keeps only the last one",
                "remove or rename one of the two entries",
            )
        seen[key] = line
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly: a syntax error names the line and column, and a duplicate
    key names both lines (TrtflowError)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise TrtflowError(f"{path}: config file {what}", "pass an existing YAML file")
    text = path.read_text(encoding="utf-8")
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        tab = "\t" in line[: (mark.column + 1) if mark else 0] or "\t" in (exc.problem or "")
        fix = "indent with spaces, not tabs" if tab else "fix the YAML syntax there"
        raise TrtflowError(f"{path}: {where}: {exc.problem or exc}", fix) from None
    except yaml.YAMLError as exc:
        raise TrtflowError(f"{path}: not valid YAML ({exc})", "fix the YAML syntax") from None


def check_cross_fields(config: dict[str, Any], source: str = "config") -> None:
    """Rules between keys that a JSON Schema cannot say (run after defaults are filled)."""
    for i, p in enumerate(config.get("engine", {}).get("dynamic_profiles", [])):
        if not p["min"] <= p["opt"] <= p["max"]:
            raise TrtflowError(
                f"{source}: engine.dynamic_profiles[{i}]: min {p['min']}, opt {p['opt']}, "
                f"max {p['max']} is not ordered",
                "use min <= opt <= max",
            )
    for name, m in config.get("models", {}).items():
        if m.get("source") == "pb" and len(m.get("image_sizes") or []) > 1:
            raise TrtflowError(
                f"{source}: models.{name}.image_sizes: a frozen pb has one input size, "
                f"{len(m['image_sizes'])} were given",
                f"give models.{name}.image_sizes one size (the graph's), or none to discover it",
            )


@cache
def _section_schema(key: str) -> dict[str, Any]:
    """The schema of one top-level key alone (with the shared ``$defs``), read once."""
    root = load_schema()
    return {
        "$defs": root.get("$defs", {}),
        "type": "object",
        "properties": {key: root["properties"][key]},
    }


def validate_target(name: str, spec: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """One ``targets.<name>`` entry, validated and with the schema's defaults filled in.

    The same check and defaults as validate_config (idempotent on an entry of a validated
    config), so code that is handed one target entry never retypes a default.
    """
    section = validate_config({"targets": {name: spec}}, source, _section_schema("targets"))
    out: dict[str, Any] = section["targets"][name]
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    raw = read_yaml(path) or {}
    return validate_config(raw, source=str(path))


#: Environment variable naming the config files Snakemake merged and its ``--config KEY=VALUE``
#: overrides (rules/common.smk sets it): the engine stages' reproduce commands pass them as
#: --config. An environment variable, not a rule param, so naming the same settings in another
#: file rebuilds nothing.
CONFIG_FILES_ENV = "TRTFLOW_CONFIG_FILES"
_OVERRIDE_KEY = re.compile(r"[A-Za-z_][\w-]*$")  # Snakemake's --config key rule


def publish_config_files(files: list[str], overrides: dict[str, Any] | None = None) -> None:
    """Tell this process's jobs which config files were merged and which top-level keys
    ``--config`` overrode (local jobs inherit the environment; cluster/remote jobs parse the
    Snakefile again and set it themselves). Each override becomes one ``KEY=<JSON>`` item."""
    items = [
        *files,
        *(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in (overrides or {}).items()),
    ]
    os.environ[CONFIG_FILES_ENV] = json.dumps(items)


def published_config_files() -> list[str]:
    """The ``--config`` items ``publish_config_files`` named: files, then ``KEY=<JSON>``
    overrides (empty outside a workflow)."""
    value = os.environ.get(CONFIG_FILES_ENV, "")
    return [str(i) for i in json.loads(value)] if value else []


def config_override(item: str) -> tuple[str, Any] | None:
    """``KEY=VALUE`` (VALUE JSON or YAML, as ``published_config_files`` writes it) ->
    ``(key, value)``; None for a config file's path."""
    key, eq, value = item.partition("=")
    if not eq or not _OVERRIDE_KEY.match(key) or Path(item).exists():
        return None
    try:
        return key, yaml.load(value, Loader=_SafeLoader) if value else None
    except yaml.YAMLError as exc:
        raise TrtflowError(
            f"--config {item}: the value of {key} is not valid JSON or YAML ({exc})",
            f"quote it for the shell, e.g. --config '{key}={{\"a\": 1}}'",
        ) from None
