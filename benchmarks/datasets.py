"""Labelled image sets for the quality benchmarks, built here from Debian packages.

``demo``: the demo corpus (``data/demo/stamps``, tuxpaint's stamps, `make demo-collection`), its
top-level folders as categories. ``emoji``: a second set in another style, built from two Debian
packages fetched with ``apt-get download`` (nothing installed): Google's Noto Color Emoji font
(``fonts-noto-color-emoji``, OFL) rendered one picture per emoji, labelled by the Unicode
consortium's emoji subgroups (``unicode-data``'s ``emoji-test.txt``: "animal-mammal",
"transport-ground", "country-flag", ...). Skin-tone variants are left out (copies of one
picture). Subgroups of ``MIN_CLASS`` emoji or more are the categories, at most ``MAX_CLASS`` of
each drawn at random; the emoji of the smaller subgroups are distractors, in no category. So the
set looks like the issue's unseen corpus: a score of categories of 20-60 pictures, and
hundreds of pictures that belong to none.

>>> items = emoji_set(Path("data/bench/emoji"))      # doctest: +SKIP
>>> items[0]                                          # doctest: +SKIP
Item(path=PosixPath('.../animal-mammal/1F98A.png'), category='animal-mammal', text='animal mammal')
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_STAMPS = ROOT / "data" / "demo" / "stamps"
EMOJI_DIR = ROOT / "data" / "bench" / "emoji"
FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "usr/share/unicode/emoji/emoji-test.txt"
MIN_CLASS = 20
MAX_CLASS = 60
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
#: The size Noto Color Emoji's bitmaps are drawn at (its only strike).
EMOJI_PX = 109


@dataclass(frozen=True)
class Item:
    path: Path
    category: str | None  # None: a distractor
    text: str | None = None  # the category's name as a text query


def demo_set(stamps: Path = DEMO_STAMPS, *, drop: tuple[str, ...] = ()) -> list[Item]:
    """The demo stamps, category = top-level folder (folders in ``drop`` left out)."""
    if not stamps.is_dir():
        raise SystemExit(f"no demo corpus at {stamps}: run `make demo-collection` first")
    items = []
    for path in sorted(stamps.rglob("*")):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg") or not path.is_file():
            continue
        cat = path.relative_to(stamps).parts[0]
        if cat in drop:
            continue
        items.append(Item(path, cat, cat))
    return items


def _fetch(work: Path, packages: tuple[str, ...]) -> None:
    work.chmod(0o755)
    shutil.chown(work, "_apt") if _has_user("_apt") else None
    subprocess.run(["apt-get", "download", *packages], cwd=work, check=True, capture_output=True)
    for deb in work.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _emoji_table(path: Path) -> list[tuple[str, str, str]]:
    """(codepoints, group, subgroup) of each fully-qualified emoji without a skin tone."""
    rows, group, sub = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            sub = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            cps = line.split(";")[0].split()
            if not SKIN_TONES & set(cps):
                rows.append(("_".join(cps), group, sub))
    return rows


def emoji_set(dest: Path = EMOJI_DIR, *, seed: int = 0) -> list[Item]:
    """The emoji set (built under ``dest`` on first use: about 20 s)."""
    index = dest / "index.tsv"
    if not index.is_file():
        _build_emoji(dest, seed)
    items = []
    for line in index.read_text(encoding="utf-8").splitlines()[1:]:
        rel, cat = line.split("\t")
        cat = cat or None
        items.append(Item(dest / rel, cat, cat.replace("-", " ") if cat else None))
    return items


def _build_emoji(dest: Path, seed: int) -> None:
    from collections import defaultdict

    from PIL import Image, ImageDraw, ImageFont

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _fetch(work, ("fonts-noto-color-emoji", "unicode-data"))
        font = ImageFont.truetype(str(work / "x" / FONT), EMOJI_PX)
        rows = _emoji_table(work / "x" / EMOJI_TEST)
        by_sub: dict[str, list[str]] = defaultdict(list)
        for cps, _group, sub in rows:
            by_sub[sub].append(cps)
        rng = random.Random(seed)
        chosen: list[tuple[str, str | None]] = []
        for sub, members in sorted(by_sub.items()):
            if len(members) >= MIN_CLASS:
                picked = sorted(rng.sample(members, min(MAX_CLASS, len(members))))
                chosen += [(cps, sub) for cps in picked]
            else:
                chosen += [(cps, None) for cps in members]
        lines = ["path\tcategory"]
        for cps, cat in chosen:
            text = "".join(chr(int(c, 16)) for c in cps.split("_"))
            image = Image.new("RGBA", (EMOJI_PX + 27, EMOJI_PX + 19), (0, 0, 0, 0))
            ImageDraw.Draw(image).text((0, 0), text, font=font, embedded_color=True)
            box = image.getbbox()
            if box is None:
                continue  # a sequence the font does not draw as one picture
            folder = cat or "_distractors"
            rel = Path(folder) / f"{cps}.png"
            (dest / folder).mkdir(parents=True, exist_ok=True)
            image.crop(box).save(dest / rel)
            lines.append(f"{rel}\t{cat or ''}")
        (dest / "SOURCE.txt").write_text(
            "Noto Color Emoji (Debian fonts-noto-color-emoji, SIL Open Font License 1.1), one "
            "picture per emoji, labelled by the Unicode emoji subgroups of Debian unicode-data's "
            "emoji-test.txt. Built by benchmarks/datasets.py.\n"
        )
        (dest / "index.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
