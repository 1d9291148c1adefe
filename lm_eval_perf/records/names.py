"""Folder names of models and tasks, and local paths written in configs and model lists."""

from __future__ import annotations

from pathlib import Path

from lm_eval_perf.errors import UserInputError

_LOCAL_PREFIXES = ("/", "./", "../", "~")


def slug(text: str) -> str:
    """``text`` as one path component: ``/`` -> ``__``, ``:`` -> ``_``, other odd characters -> ``_``."""
    text = text.replace("/", "__").replace(":", "_")
    text = "".join(c if c.isalnum() or c in "._+@=-" else "_" for c in text)
    return "_" + text[1:] if text.startswith(".") else text


def model_name(pretrained: str, revision: str | None = None, peft: str | None = None) -> str:
    """The default result-folder name of a model: ``org__name[@revision][+adapter]``.

    Hub ids keep their organisation (``org__name``); local paths contribute their last component.
    """
    base = lambda s: Path(s).name if s.startswith(_LOCAL_PREFIXES) else s  # noqa: E731
    name = slug(base(pretrained))
    if revision:
        name += "@" + slug(revision)
    if peft:
        name += "+" + slug(base(peft))
    return name


def precision_folder(precision: str | None, ratio: float | None, device: str | None = None) -> str:
    """``bfloat16``, ``default`` (no precision), ``bfloat16@r0.6`` (compressed to ratio 0.6),
    ``bfloat16@cpu`` / ``bfloat16@r0.6@cuda`` (a matrix with a device axis)."""
    name = precision or "default"
    name = name if ratio is None or ratio >= 1.0 else f"{name}@r{ratio:g}"
    return name if device is None else f"{name}@{device}"


def folder_name(value: str, where: str) -> str:
    """``value`` if it can be a result-folder name, else a one-line error naming ``where``."""
    if value != slug(value) or value in ("", "_"):
        raise UserInputError(f"{where}: {value!r} is not a folder name (letters, digits, . _ + @ = - only)")
    return value


def local_path(path: str, base: Path, where: str) -> str:
    """``./x``, ``../x`` (relative to ``base``), ``~/x`` and ``/x`` as absolute paths, which must exist
    (else a one-line error naming ``where``); anything else (hub ids, ``arch:``, ``bundled:``) unchanged."""
    if path.startswith(("./", "../")):
        resolved = (base / path).resolve()
    elif path.startswith(("~", "/")):
        resolved = Path(path).expanduser()
    else:
        return path
    if not resolved.exists():
        shown = "" if str(resolved) == path else f" ({resolved})"
        raise UserInputError(f"{where}: local path {path}{shown} does not exist")
    return str(resolved)
