"""The base of every artifact schema: a versioned dataclass written atomically as JSON and read back through the
same type, so a producer and its consumers cannot disagree on a key without an error naming the file.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar, TypeVar

from ..errors import UserError
from ..io.atomic import write_json

A = TypeVar("A", bound="Artifact")


class ArtifactError(UserError):
    """An artifact file that is missing, not JSON, of another schema version, or with keys its schema lacks."""


@dataclasses.dataclass
class Artifact:
    """Subclasses are dataclasses whose fields are JSON values (numbers, strings, lists, dicts of those).

    `VERSION` is written as `schema_version`; bump it when a field changes meaning. `FLATTEN` names one dict field
    whose entries are written at the top level (keys chosen at run time, e.g. one score per feature space).
    `PRODUCER` is the stage that writes the file, for error messages.
    """

    VERSION: ClassVar[int] = 1
    PRODUCER: ClassVar[str] = ""
    FLATTEN: ClassVar[str | None] = None

    def to_dict(self) -> dict:
        data = {"schema_version": self.VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == self.FLATTEN:
                clash = set(value) & {f.name for f in dataclasses.fields(self)}
                if clash:
                    raise ValueError(f"{type(self).__name__}.{field.name} keys {sorted(clash)} clash with fields")
                data.update(value)
            else:
                data[field.name] = value
        return data

    @classmethod
    def from_dict(cls: type[A], data: dict, source: str = "<dict>") -> A:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object written by stage {cls.PRODUCER}")
        version = data.get("schema_version")
        if version != cls.VERSION:
            raise ArtifactError(f"{source}: schema_version {version!r}, this code reads {cls.__name__} version "
                                f"{cls.VERSION}; rerun `dvc repro {cls.PRODUCER}`")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and k != cls.FLATTEN}
        rest = {k: v for k, v in data.items() if k not in names and k != "schema_version"}
        if cls.FLATTEN:
            kwargs[cls.FLATTEN] = rest
        elif rest:
            raise ArtifactError(f"{source}: keys {sorted(rest)} are not in {cls.__name__}; rerun `dvc repro "
                                f"{cls.PRODUCER}`")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ArtifactError(f"{source}: {cls.__name__} lacks {missing}; rerun `dvc repro {cls.PRODUCER}`")
        return cls(**kwargs)

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls: type[A], path: str | Path) -> A:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path} not found: run `dvc repro {cls.PRODUCER}`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path} is not valid JSON ({e}); rerun `dvc repro {cls.PRODUCER}`") from e
        return cls.from_dict(data, str(path))
