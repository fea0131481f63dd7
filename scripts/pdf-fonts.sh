#!/usr/bin/env bash
# Fetch the fonts the person's PDF copy is set in (third-party files: never committed).
#
# The PDF embeds a subset of the Noto fonts (SIL Open Font License 1.1) so that every name and note
# prints in its own letters: Noto Sans (Latin, including Polish, Romanian and Somali; Greek;
# Cyrillic), Noto Sans Bengali, Noto Sans Gujarati and Noto Naskh Arabic (Arabic and Urdu), each in
# Regular and Bold. They come from Debian's package fonts-noto-core, pinned to one version and
# checked against the SHA-256 of the .deb as Debian publishes it, and only those eight files are
# unpacked into DEST (default: target/fonts/ in this checkout, ignored by git).
#
# Usage: pdf-fonts.sh [DEST]   (or set POLYPHONY_FONT_DIR)
#
# Then point Polyphony at DEST with POLYPHONY_FONT_DIR (the CLI's `export --font-dir` and the app
# read it too). Safe to run again: it does nothing when the fonts are already there. Needs
# apt-get (any user can download a package; only `apt-get update` on a machine that never ran it
# needs root). Exits non-zero with a message saying what to do when the fonts cannot be had.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${POLYPHONY_FONT_DIR:-$root/target/fonts}}"
package="fonts-noto-core"
version="20201225-1"
sha256="58f4f0bb6720f919f92096b3508e1412a0f1544424ade6c5b5bf1eb694dd64ba"
fonts=(
    NotoSans-Regular.ttf NotoSans-Bold.ttf
    NotoSansBengali-Regular.ttf NotoSansBengali-Bold.ttf
    NotoSansGujarati-Regular.ttf NotoSansGujarati-Bold.ttf
    NotoNaskhArabic-Regular.ttf NotoNaskhArabic-Bold.ttf
)

fail() {
    echo "pdf-fonts: $*" >&2
    exit 1
}

have_all() {
    for f in "${fonts[@]}"; do
        [ -s "$dest/$f" ] || return 1
    done
}

if have_all; then
    exit 0
fi

command -v apt-get >/dev/null || fail "apt-get is needed to download $package=$version from Debian"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() {
    (cd "$work" && apt-get download -qq "$package=$version" >/dev/null 2>"$work/apt.err")
}
if ! download; then
    # A machine whose package lists were never fetched knows no version of anything.
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
            fail "apt-get update failed (are Debian's package mirrors reachable?)"
        download || fail "could not download $package=$version: $(cat "$work/apt.err")"
    else
        fail "could not download $package=$version ($(cat "$work/apt.err")); run 'apt-get update' as root and try again"
    fi
fi
deb="$work/${package}_${version}_all.deb"
[ -f "$deb" ] || fail "apt-get download did not leave $deb"
echo "$sha256  $deb" | sha256sum --check --status ||
    fail "$deb does not match the pinned SHA-256 $sha256"
dpkg-deb -x "$deb" "$work/unpacked" || fail "could not unpack $deb"
mkdir -p "$dest"
for f in "${fonts[@]}"; do
    src="$work/unpacked/usr/share/fonts/truetype/noto/$f"
    [ -s "$src" ] || fail "$package $version no longer contains $f"
    # Into place in one step, so a test running alongside never reads half a font.
    cp "$src" "$dest/$f.partial"
    mv "$dest/$f.partial" "$dest/$f"
done
cp "$work/unpacked/usr/share/doc/$package/copyright" "$dest/COPYRIGHT-$package" 2>/dev/null || true
echo "pdf-fonts: Noto fonts ($package $version, OFL-1.1) in $dest"
