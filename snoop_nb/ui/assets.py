"""Where the widgets' front-end templates live (``widgets/`` beside the package)."""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "widgets",  # a source checkout / editable install
    Path(__file__).resolve().parent / "widgets",  # a wheel, which carries them in the package
)


def asset(name: str) -> str:
    """The path of the front-end file ``name`` (e.g. ``"image_grid.vue"``)."""
    for base in _CANDIDATES:
        path = base / name
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"snoop-nb widget asset {name!r} not found in {_CANDIDATES[0]}")
