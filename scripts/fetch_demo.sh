#!/usr/bin/env bash
# Materialise snoop-nb's labelled demo corpus: the stamps of Debian's tuxpaint-stamps-default
# (GPL-2), images sorted into folders that are real labels (animals/birds, food, vehicles, ...).
#
#   scripts/fetch_demo.sh DEST
#
# Writes DEST/stamps/<category>/.../*.{png,svg}, DEST/COPYRIGHT and DEST/SOURCE.txt. The package
# is fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed).
# Idempotent: exits 0 at once when DEST/stamps already holds images. Nothing of it goes into git.
set -euo pipefail

PKG=tuxpaint-stamps-default
STAMPS=usr/share/tuxpaint/stamps
# Image formats to keep; the package also holds sounds (.ogg/.wav) and texts (.txt/.dat).
IMAGE_FIND=(-type f \( -iname '*.png' -o -iname '*.svg' -o -iname '*.jpg' -o -iname '*.jpeg'
  -o -iname '*.webp' -o -iname '*.bmp' -o -iname '*.gif' -o -iname '*.tif' -o -iname '*.tiff' \))

if [[ $# -ne 1 || -z $1 ]]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
mkdir -p "$1"
DEST=$(cd "$1" && pwd)

has_images() { [[ -d $1 ]] && [[ -n $(find "$1" "${IMAGE_FIND[@]}" -print -quit) ]]; }

if has_images "$DEST/stamps"; then
  echo "demo data already present: $DEST/stamps"
  exit 0
fi

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get drops root to the _apt user to download; that user must be able to write here.
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true
cd "$work"

if ! apt-cache show "$PKG" >/dev/null 2>&1; then
  echo "$PKG not in the apt cache; running apt-get update" >&2
  apt-get update -qq
fi
apt-get download -qq "$PKG"
debs=("$PKG"_*.deb)
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -x "$deb" root
rm -f "$deb"

# Copy the images (keeping the category folders) into a staging folder inside DEST, then rename
# it into place, so an interrupted run never leaves a half-filled DEST/stamps behind.
staging="$DEST/.stamps.partial"
rm -rf "$staging"
mkdir -p "$staging"
(cd "root/$STAMPS" && find . "${IMAGE_FIND[@]}" -print0 | xargs -0 cp -p --parents -t "$staging")
cp "root/usr/share/doc/$PKG/copyright" "$DEST/COPYRIGHT"
cat >"$DEST/SOURCE.txt" <<TXT
Debian package $PKG $version (https://packages.debian.org/$PKG), license GPL-2 (see COPYRIGHT).
stamps/ holds the image files of /$STAMPS/ in that package (sounds and texts left out),
fetched by scripts/fetch_demo.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
TXT
rm -rf "$DEST/stamps"
mv "$staging" "$DEST/stamps"

n=$(find "$DEST/stamps" "${IMAGE_FIND[@]}" | wc -l)
ncat=$(find "$DEST/stamps" -mindepth 1 -maxdepth 1 -type d | wc -l)
echo "demo data: $n images in $ncat categories from $PKG $version -> $DEST/stamps ($((SECONDS - start)) s)"
