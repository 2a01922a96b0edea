"""Small file helpers shared by the commands: YAML settings files and markdown reports."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def dataclass_from_yaml(cls: type[T], path: str | Path, what: str) -> T:
    """Build the dataclass ``cls`` from a YAML mapping file; ``what`` names the file in error messages."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    try:
        data: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {str(path)!r} must be a mapping")
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"{what} file {str(path)!r} has unknown key(s) {unknown}; valid keys are {valid}")
    return cls(**data)


def write_report(out: Path, lines: Sequence[str]) -> str:
    """Join ``lines`` into a markdown report written to ``out`` (folders created); returns the text."""
    report = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return report
