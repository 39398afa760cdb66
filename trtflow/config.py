"""Config validation against schemas/config.schema.yaml with one clear message per mistake.

Pure Python (jsonschema + PyYAML): safe to import from rules/common.smk on any host.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from trtflow.errors import TrtflowError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


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
        return (f"{error.instance!r} has the wrong type", f"use a {val}{hint}")
    if v == "required":
        return (error.message, f"add the key{hint}")
    if v == "oneOf":
        # e.g. batch: "dynamic" or an integer >= 1; report the closest alternative's message
        return (f"{error.instance!r} is not valid", f"{desc or 'see the schema'}")
    if v == "pattern" or error.validator == "propertyNames":
        return (error.message, "use letters, digits, '_', '-', '.' only")
    return (error.message, desc or "see schemas/config.schema.yaml")


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


def validate_config(
    config: dict[str, Any], source: str = "config", schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    Raises TrtflowError naming the first offending key (``<source>: models.x.image_sizes[0]: …``).
    """
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        # descend into oneOf/anyOf to the most specific message
        best = jsonschema.exceptions.best_match([err])
        what, fix = _describe(best if best.validator != "oneOf" else err)
        raise TrtflowError(f"{source}: {_key_path(best)}: {what}", fix)
    out = copy.deepcopy(config)
    _set_defaults(out, schema, schema)
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TrtflowError(f"{path}: config file not found", "pass an existing YAML file")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise TrtflowError(f"{path}: not valid YAML ({exc})", "fix the YAML syntax") from exc
    return validate_config(raw, source=str(path))
