"""Small file helpers shared by the commands: YAML settings files and markdown reports."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML or JSON file (YAML is a superset of JSON). Errors are one line, ``file:line:column:
    message`` (1-based), naming ``what`` the file is for.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        detail = f"{problem} ({' '.join(context.split())})" if context else problem
        raise ValueError(f"{where}: {what} is not valid YAML/JSON: {detail}") from None


def dataclass_from_yaml(cls: type[T], path: str | Path, what: str) -> T:
    """Build the dataclass ``cls`` from a YAML mapping file; ``what`` names the file in error messages. A field
    named ``path`` is not read from the file: it is set to the file's path (plans find their data beside it)."""
    path = Path(path)
    data = read_yaml(path, f"{what} file")
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {str(path)!r} must be a mapping")
    valid = [f.name for f in fields(cls) if f.init and f.name != "path"]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"{what} file {str(path)!r} has unknown key(s) {unknown}; valid keys are {valid}")
    obj = cls(**data)
    if any(f.name == "path" for f in fields(cls)):  # type: ignore[arg-type]
        obj.path = str(path)  # type: ignore[attr-defined]
    return obj


def check_writable_file(path: str | Path, what: str, example: str) -> None:
    """A one-line ``ValueError`` now, before any long work, if the file ``path`` could not be written later: it
    names a folder, a read-only file, or a new file whose nearest existing ancestor is a file or a folder that
    cannot be written. ``what`` opens the message (``--out``); ``example`` is a file name to suggest in a folder."""
    import os

    target = Path(path).expanduser()
    shown = f"{what} {str(path)!r}"
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        raise ValueError(f"{shown} is a folder; give a file such as {str(target / example)!r}")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise ValueError(f"{shown} is not writable; give another path")
        return
    existing = next(p for p in target.parents if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise ValueError(f"{shown} cannot be written ({str(existing)!r} is a file, not a folder); give another path")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{shown} cannot be written ({str(existing)!r} is not a writable folder); give another "
                         "path")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder: a kill leaves the old file or the
    new one, never half of one (the records a resumed run reads back)."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_report(out: Path, lines: Sequence[str]) -> str:
    """Join ``lines`` into a markdown report written to ``out`` (folders created); returns the text."""
    report = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return report


def git_commit() -> str | None:
    """The commit of the checkout holding this package (``-dirty`` when its code has changes), or None."""
    import subprocess

    root = Path(__file__).resolve().parents[1]  # the checkout holding this package
    if not (root / "pyproject.toml").is_file():
        return None  # an installed copy: a repository around site-packages is not this code's
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True, cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hypermeta", "plugins", "pyproject.toml"],
                               capture_output=True, text=True, timeout=10, check=True, cwd=root).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None  # dirty: the code differs (data files do not count)


def save_arrays(path: str | Path, arrays: dict, manifest: dict) -> Path:
    """``PATH.safetensors`` (numpy ``arrays``) and ``PATH.json`` (``manifest``), folders created; returns the
    ``.safetensors`` path. Loading them back (:func:`load_arrays`) runs no code."""
    import json

    from safetensors.numpy import save_file

    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path.with_suffix(".safetensors")


def load_arrays(path: str | Path, what: str) -> tuple[dict, dict]:
    """The arrays and manifest that :func:`save_arrays` wrote (an empty manifest when its JSON is missing); a
    one-line ``ValueError`` naming ``what`` for a path that is not an existing ``.safetensors`` file."""
    import json

    from safetensors.numpy import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{what} must be a .safetensors file, got {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    manifest_path = path.with_suffix(".json")
    return dict(load_file(str(path))), json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}


def install_weights(source: str | Path, dest: str | Path, check: Any, provenance: dict | None = None) -> str:
    """Copy the weights ``source`` (``.safetensors`` and its ``.json``) to ``dest`` (and ``provenance``, when given,
    to ``<stem>.provenance.json``): every file staged beside its final name first, the staged weights loaded by
    ``check`` (a loader that raises on a bad file, e.g. ``QStart.load``), then renamed back to back, so a failed
    or killed install leaves the old files. Returns the installed weights' sha256."""
    import hashlib
    import json
    import shutil

    source, dest = Path(source), Path(dest).with_suffix(".safetensors")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = {dest.with_suffix(sfx): dest.with_name(f"{dest.stem}.staged{sfx}") for sfx in (".safetensors", ".json")}
    try:
        for final, tmp in staged.items():
            shutil.copyfile(source.with_suffix(final.suffix), tmp)
        check(staged[dest])
        if provenance is not None:
            staged[dest.with_name(f"{dest.stem}.provenance.json")] = tmp = dest.with_name(
                f"{dest.stem}.staged.provenance.json")
            tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256(staged[dest].read_bytes()).hexdigest()
    for final, tmp in staged.items():
        tmp.replace(final)
    return digest


def platform_fingerprint() -> str:
    """What decides a run's floating-point results besides its code and seeds: the torch build and the CPU (its
    model and vector extensions). Runs made under different fingerprints are valid runs of the same jobs, not
    bit-identical copies (seen: meta2's held-out runs and today's, 2026-12-06)."""
    import platform

    import torch

    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # Linux; elsewhere the machine's name alone
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    model, flags = fields.get("model name") or platform.machine(), set(fields.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"torch {torch.__version__}; {model}; {'+'.join(isa) or platform.machine()}"
