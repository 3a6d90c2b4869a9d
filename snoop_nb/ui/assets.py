"""Where the widgets' front-end templates live: ``widgets/`` at the top of a source checkout
(or an editable install), ``snoop_nb/ui/widgets/`` inside a wheel (setup.py copies them there)."""

from __future__ import annotations

from pathlib import Path

# The package's own copy first: beside an installed wheel, parents[2] is site-packages.
_CANDIDATES = (
    Path(__file__).resolve().parent / "widgets",  # a wheel, which carries them in the package
    Path(__file__).resolve().parents[2] / "widgets",  # a source checkout / editable install
)


def asset(name: str) -> str:
    """The path of the front-end file ``name`` (e.g. ``"image_grid.vue"``)."""
    for base in _CANDIDATES:
        path = base / name
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"snoop-nb widget asset {name!r} not found in {_CANDIDATES[-1]} or {_CANDIDATES[0]}"
    )
