"""Central validation of params.yaml: every key a stage reads is declared here with its type and range.

Stages call `load_params(path, sections)`. A wrong value, unknown key or unknown option raises `ParamsError`
whose message names the key and the fix; stage entry points turn that into exit code 2 before writing anything.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import yaml


class ParamsError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str                                  # int | float | str | bool | choice | list
    default: Any = None                        # None: required
    low: float | None = None                   # inclusive bounds unless open_low/open_high
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()
    item: "Field | None" = None                # element spec for lists
    min_len: int = 0
    help: str = ""

    def check(self, key: str, value: Any) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ParamsError(f"{key} must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ParamsError(f"{key} = {value!r} is not a known option; choose one of {list(self.choices)}")
            return value
        if self.kind == "str":
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ParamsError(f"{key} must be a string, got {value!r}")
            return value
        if self.kind == "list":
            if not isinstance(value, list):
                raise ParamsError(f"{key} must be a list, got {value!r}")
            if len(value) < self.min_len:
                raise ParamsError(f"{key} must have at least {self.min_len} entr{'y' if self.min_len == 1 else 'ies'}, got {value!r}")
            return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamsError(f"{key} must be a number, got {value!r}")
            if self.kind == "int" and (not float(value).is_integer()):
                raise ParamsError(f"{key} must be an integer, got {value!r}")
            value = int(value) if self.kind == "int" else float(value)
            if not math.isfinite(value):
                raise ParamsError(f"{key} must be finite, got {value!r}")
            lo_bad = self.low is not None and (value <= self.low if self.open_low else value < self.low)
            hi_bad = self.high is not None and (value >= self.high if self.open_high else value > self.high)
            if lo_bad or hi_bad:
                lo = "(" if self.open_low else "["
                hi = ")" if self.open_high else "]"
                raise ParamsError(f"{key} = {value!r} is out of range {lo}{self.low}, {self.high}{hi}"
                                  + (f" ({self.help})" if self.help else ""))
            return value
        raise AssertionError(self.kind)


def Int(default=None, low=None, high=None, **kw): return Field("int", default, low, high, **kw)
def Float(default=None, low=None, high=None, **kw): return Field("float", default, low, high, **kw)
def Str(default="", **kw): return Field("str", default, **kw)
def Bool(default=None, **kw): return Field("bool", default, **kw)
def Choice(*choices, default=None, **kw): return Field("choice", default, choices=tuple(choices), **kw)
def List(item: Field, default=None, min_len=0, **kw): return Field("list", default, item=item, min_len=min_len, **kw)


SEED = Int(low=0, high=2**31 - 1)

SCHEMA: dict[str, dict[str, Field]] = {
    "teacher": {
        "source": Choice("random-face", "file", "url", default="random-face"),
        "path": Str(help="checkpoint file for source=file"),
        "url": Str(help="download address for source=url"),
        "sha256": Str(help="expected sha256 of the file at teacher.url"),
        "parity_tolerance": Float(1e-4, low=0, open_low=True),
        "parity_seeds": List(SEED, default=[0, 1, 2, 3], min_len=1),
        "parity_truncation": Float(0.5, low=0, high=1),
        "w_avg_samples": Int(4096, low=1),
        "w_avg_seed": Int(0, low=0, high=2**31 - 1),
        "sample_seeds": List(SEED, default=list(range(8)), min_len=1),
        "sample_truncation": Float(0.7, low=0, high=1),
    },
}

CROSS_CHECKS: dict[str, list[Callable[[dict], None]]] = {}


def _teacher_rules(p: dict) -> None:
    if p["source"] == "url":
        if not p["url"]:
            raise ParamsError("teacher.source = url needs teacher.url (the checkpoint address)")
        sha = p["sha256"].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ParamsError("teacher.source = url needs teacher.sha256: the 64-hex-digit sha256 of the file "
                              "(compute it with `sha256sum FILE`)")
    if p["source"] == "file" and not p["path"]:
        raise ParamsError("teacher.source = file needs teacher.path (a checkpoint written by this pipeline)")


CROSS_CHECKS["teacher"] = [_teacher_rules]


def validate(raw: dict, sections: list[str], source: str = "params.yaml") -> dict:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    out = {}
    for section in sections:
        if section not in SCHEMA:
            raise AssertionError(f"no schema for params section {section!r}")
        given = raw.get(section)
        if given is None:
            raise ParamsError(f"{source}: section `{section}` is missing")
        if not isinstance(given, dict):
            raise ParamsError(f"{source}: `{section}` must be a mapping")
        fields = SCHEMA[section]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ParamsError(f"{source}: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                              f"known keys: {', '.join(sorted(fields))}")
        checked = {}
        for name, field in fields.items():
            key = f"{section}.{name}"
            if name not in given:
                if field.default is None:
                    raise ParamsError(f"{source}: required key {key} is missing")
                value = field.default
            else:
                value = given[name]
            checked[name] = field.check(key, value)
        for rule in CROSS_CHECKS.get(section, []):
            rule(checked)
        out[section] = checked
    return out


def load_params(path: str | Path = "params.yaml", sections: list[str] | None = None) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found (run from the project root)") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    return validate(raw, sections if sections is not None else list(SCHEMA), str(path))
