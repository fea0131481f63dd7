// Refresh the committed copy of the NHS design system's compiled styles from the npm package.
//
// Run after changing the nhsuk-frontend version in package.json:
//   npm ci && node scripts/refresh-nhsuk.mjs
//
// The compiled CSS is committed (MIT licensed, licence beside it) so the Rust binary builds with
// cargo alone and embeds it. Two changes are made on the way in:
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
const header = `/*! nhsuk-frontend ${pkg.version} (MIT, see LICENSE); @font-face rules removed by scripts/refresh-nhsuk.mjs */\n`;
writeFileSync(join(out, 'nhsuk-frontend.min.css'), header + css.replace(/^@charset "UTF-8";/, ''));
for (const img of ['favicon.svg', 'nhsuk-icon-arrow-down.svg', 'nhsuk-icon-arrow-up.svg', 'nhsuk-icon-arrow-up-down.svg', 'nhsuk-icon-cross.svg']) {
  copyFileSync(join(dist, 'assets', 'images', img), join(out, 'images', img));
}
writeFileSync(join(out, 'VERSION'), `${pkg.version}\n`);
console.log(`nhsuk-frontend ${pkg.version}: removed ${before} @font-face rules; assets written to ${out}`);
