// Prepare the NHS design system's compiled styles and icons from the installed npm package into
// assets/nhsuk/, where the app's build embeds them. Run by scripts/assets.sh (which installs the
// pinned package first); the output is not committed: it is third-party (MIT; the package ships
// no licence file, so the licence text is written here from its package.json's "MIT" and the
// project's copyright line). Two changes are made on the way in:
// - the @font-face rules are removed: they load the licensed Frutiger font from an NHS host, and
//   the app must make no external request and ship no licensed font; the design system's own
//   fallback (Arial, sans-serif) is what the page then uses, as NHS guidance allows;
// - any other absolute http(s) URL makes this script fail, so nothing external slips in.
import { readFileSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const app = join(here, '..');
const pkgDir = join(app, 'node_modules', 'nhsuk-frontend');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const dist = join(pkgDir, 'dist', 'nhsuk');
const out = join(app, 'assets', 'nhsuk');
mkdirSync(join(out, 'images'), { recursive: true });

let css = readFileSync(join(dist, 'nhsuk-frontend.min.css'), 'utf8');
const before = (css.match(/@font-face\{/g) || []).length;
css = css.replace(/@font-face\{[^}]*\}/g, '');
const external = css.match(/url\((["']?)https?:[^)]*\)/g);
if (external) {
  console.error('external URLs remain in the CSS:', external);
  process.exit(1);
}
const header = `/*! nhsuk-frontend ${pkg.version} (MIT, see LICENSE); @font-face rules removed by scripts/prepare-nhsuk.mjs */\n`;
writeFileSync(join(out, 'nhsuk-frontend.min.css'), header + css.replace(/^@charset "UTF-8";/, ''));
for (const img of ['favicon.svg', 'nhsuk-icon-arrow-down.svg', 'nhsuk-icon-arrow-up.svg', 'nhsuk-icon-arrow-up-down.svg', 'nhsuk-icon-cross.svg']) {
  copyFileSync(join(dist, 'assets', 'images', img), join(out, 'images', img));
}
if (pkg.license !== 'MIT') {
  console.error(`nhsuk-frontend ${pkg.version} says its licence is ${pkg.license}, not MIT: check it before use`);
  process.exit(1);
}
writeFileSync(join(out, 'LICENSE'), `MIT License

Copyright (c) 2019 NHS.UK

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
`);
// Written last: scripts/assets.sh takes a current VERSION to mean everything above is in place.
writeFileSync(join(out, 'VERSION'), `${pkg.version}\n`);
console.log(`nhsuk-frontend ${pkg.version}: removed ${before} @font-face rules; assets written to ${out}`);
