"""Offline structural-schema validation, the way the Kubernetes API server does it.

The API server validates a custom resource against its CRD's ``openAPIV3Schema``
after three steps that plain JSON Schema does not know about; ``normalize`` and
``to_jsonschema`` reproduce them:

* null values in fields that are not ``nullable`` are dropped;
* ``default`` values are applied (recursively, also inside defaulted objects);
* unknown fields are rejected (``kubectl apply`` uses strict field validation):
  every object schema that lists ``properties`` and is not
  ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.

Kubernetes extensions become checks: ``x-kubernetes-int-or-string`` (integer or
string), ``x-kubernetes-list-type: map`` (unique ``x-kubernetes-list-map-keys``)
and ``set`` (unique items), ``format: int32/int64`` (range), ``nullable``. CEL
rules (``x-kubernetes-validations``) are not evaluated, except the one form the
KubeRay CRDs use on create, ``self in ['a', 'b']``, which becomes an enum with the
rule's message; transition rules (``oldSelf``) only apply to updates.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError

_CEL_IN = re.compile(r"^\s*self\s+in\s+\[(.*)\]\s*$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

# ObjectMeta as the API server accepts it on create (the CRD only says "object").
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
        "selfLink": {"type": "string"},
    },
}


def _preserves(schema: Mapping[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _cel_enum(rules: list[Mapping[str, Any]]) -> tuple[list[str], str] | None:
    for rule in rules:
        m = _CEL_IN.match(str(rule.get("rule", "")))
        if m:
            values = re.findall(r"'([^']*)'|\"([^\"]*)\"", m.group(1))
            return [a or b for a, b in values], str(rule.get("message", ""))
    return None


def to_jsonschema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-Schema (draft 7) copy of a structural schema (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: to_jsonschema(v) for k, v in value.items()}
        elif (key == "items" and isinstance(value, Mapping)) or (
            key == "additionalProperties" and isinstance(value, Mapping)
        ):
            out[key] = to_jsonschema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_jsonschema(v) for v in value]
        elif key == "not":
            out[key] = to_jsonschema(value)
        elif key == "x-kubernetes-validations":
            enum = _cel_enum(list(value))
            if enum is not None:
                out["x-cel-enum"] = {"values": enum[0], "message": enum[1]}
        else:
            out[key] = copy.deepcopy(value)
    if "properties" in out and not _preserves(schema) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        t = out["type"]
        out["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
    return out


def normalize(value: Any, schema: Mapping[str, Any]) -> Any:
    """Drop nulls of non-nullable fields and apply defaults, recursively (in place
    for mappings and lists; returns the value)."""
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if value[key] is None and not (sub or {}).get("nullable"):
                del value[key]
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if isinstance(sub, Mapping):
                normalize(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            normalize(item, schema["items"])
    return value


def _list_type(
    validator: Any, list_type: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = list(schema.get("x-kubernetes-list-map-keys", []))
        seen: dict[tuple[Any, ...], int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, Mapping):
                continue
            k = tuple(item.get(key) for key in keys)
            if k in seen:
                shown = ", ".join(f"{key}={v!r}" for key, v in zip(keys, k, strict=True))
                yield ValidationError(f"duplicate entry [{i}] with {shown} (also [{seen[k]}])")
            else:
                seen[k] = i
    elif list_type == "set":
        for i, item in enumerate(instance):
            if item in instance[:i]:
                yield ValidationError(f"duplicate value {item!r} in a set")


def _cel_enum_check(
    validator: Any, spec: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if instance not in spec["values"]:
        yield ValidationError(spec["message"] or f"must be one of {spec['values']}")


_FORMATS = FormatChecker()


def _int_format(name: str) -> None:
    lo, hi = _INT_RANGES[name]

    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or lo <= value <= hi

    _FORMATS.checks(name)(check)


for _name in _INT_RANGES:
    _int_format(_name)

KubeValidator = jsonschema.validators.extend(
    Draft7Validator,
    {"x-kubernetes-list-type": _list_type, "x-cel-enum": _cel_enum_check},
)


def path_of(error: ValidationError) -> str:
    """``spec.workerGroupSpecs[0].template`` style path of an error."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def message_of(error: ValidationError) -> str:
    """The API server's wording where it differs from jsonschema's."""
    if error.validator == "additionalProperties" and error.validator_value is False:
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return "; ".join(f'unknown field "{k}"' for k in extra)
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return f"{error.instance!r}: must be an integer or a string"
    if error.validator == "required":
        return f"Required value: {error.message.split(' is a required')[0]}"
    if error.validator == "format" and error.validator_value in _INT_RANGES:
        return f"{error.instance!r} does not fit in {error.validator_value}"
    return str(error.message)


def iter_schema_errors(instance: Any, schema: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(path, message) for every violation of ``schema`` (a ``to_jsonschema`` result)."""
    validator = KubeValidator(schema, format_checker=_FORMATS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        field = path_of(err)
        if err.validator == "additionalProperties" and err.validator_value is False:
            for msg in message_of(err).split("; "):
                name = msg.split('"')[1]
                yield (f"{field}.{name}" if field else name), msg
        else:
            yield field, message_of(err)
