// Bundles vmctl (compiled by tsc into dist/) into one CommonJS file, dist/vmctl.cjs, and makes
// the V8 code cache that bin/vmctl.cjs loads it with. The cache is taken after running vmctl
// in this process on plain argv that needs no daemon (verbs that fail to connect), so that
// it holds the functions a real run compiles, not only the top level.
//
// yargs (help text and unusual argv) and chalk (colour on a terminal) are most of the code
// and most runs never load them: each is a bundle of its own next to vmctl.cjs, required
// when first imported.
//
//   node scripts/bundle-vmctl.mjs      (part of npm run build:ts)
import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { BUNDLE, cachePath, loadBundle } = require('../bin/vmctl.cjs');

// yargs' CommonJS build reads process.stdout.columns when it loads, which makes
// process.stdout: for a pipe, that loads net and costs about as much as the rest of a `vmctl
// status`. The bundle reads it when yargs asks for the terminal's width, i.e. for help.
const EAGER_COLUMNS = 'stdColumns:void 0!==process.stdout.columns?process.stdout.columns:null';
const LAZY_COLUMNS = 'get stdColumns(){return void 0!==process.stdout.columns?process.stdout.columns:null}';
/** The packages that get bundles of their own, and where. */
const SIDE_BUNDLES = { 'yargs/yargs': 'vmctl-yargs.cjs', chalk: 'vmctl-chalk.cjs' };

// Each becomes a module that requires its bundle, so that esbuild's own interop turns the
// dynamic import into a require: the bundle runs as a script, which cannot import().
const sideBundles = {
  name: 'side-bundles',
  setup(b) {
    const files = Object.values(SIDE_BUNDLES).map((file) => `./${file}`);
    const exactly = (words) => new RegExp(`^(${words.map((w) => w.replace(/[./]/g, '\\$&')).join('|')})$`);
    b.onResolve({ filter: exactly(Object.keys(SIDE_BUNDLES)) }, (args) => ({ path: args.path, namespace: 'side' }));
    b.onResolve({ filter: exactly(files) }, (args) => ({ path: args.path, external: true }));
    b.onLoad({ filter: /.*/, namespace: 'side' }, (args) => ({
      contents: `module.exports = require('./${SIDE_BUNDLES[args.path]}');`,
      loader: 'js',
    }));
  },
};

const lazyColumns = {
  name: 'yargs-lazy-columns',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]index\.cjs$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes(EAGER_COLUMNS)) {
        throw new Error(`${args.path}: the terminal width read moved; update ${import.meta.url}`);
      }
      return { contents: text.replace(EAGER_COLUMNS, LAZY_COLUMNS), loader: 'js' };
    });
  },
};

const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'warning' };

await build({
  ...common,
  entryPoints: [join(ROOT, 'dist', 'src', 'cli', 'vmctl.js')],
  outfile: BUNDLE,
  // The addon is found at run time relative to the package root (see src/native.ts).
  external: ['*.node'],
  // ES modules ask import.meta.url where they are; in the bundle, that is the bundle.
  define: { 'import.meta.url': '__vmctl_bundle_url' },
  banner: { js: "var __vmctl_bundle_url = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [sideBundles],
});
for (const [pkg, file] of Object.entries(SIDE_BUNDLES)) {
  await build({
    ...common,
    entryPoints: [require.resolve(pkg)],
    outfile: join(dirname(BUNDLE), file),
    // yargs takes only strictEqual and notStrictEqual from node:assert, whose loading alone
    // costs milliseconds (it sets up colours for its messages by opening stderr).
    alias: { assert: join(ROOT, 'scripts', 'bundle', 'assert.cjs') },
    plugins: [lazyColumns],
  });
}

/** Streams that swallow what vmctl writes while it warms up. */
function quietIo() {
  const sink = () => new Writable({ write: (_chunk, _enc, done) => done() });
  return { stdin: process.stdin, stdout: sink(), stderr: sink(), env: { VMD_SOCKET: '' } };
}

const { exports: vmctl, script } = loadBundle(BUNDLE, { useCache: false });
const nowhere = join(ROOT, 'dist', 'no-such-vmd.sock');
const runs = [
  ['--socket', nowhere, 'status'],
  ['--socket', nowhere, 'status', '--json'],
  ['--socket', nowhere, 'stop', 'vm1'],
  ['--socket', nowhere, 'wait', '--for', 'running', 'vm1'],
];
for (const argv of runs) await vmctl.main(argv, quietIo());
writeFileSync(cachePath(BUNDLE), script.createCachedData());
