#!/usr/bin/env node
'use strict';
// vmctl runs from one bundled file, dist/vmctl.cjs, compiled with the V8 code cache that the
// build leaves next to it. Resolving and compiling some forty ES modules on every run would
// cost more than starting node itself; with the bundle and its cache a `vmctl status` costs
// little more than `node -e 0`. yargs and chalk have bundles of their own beside it, which
// the bundle requires only for help, unusual argv or colour. V8 rejects a cache made by
// another node or V8 flags, and the bundle is then compiled as usual: slower, never wrong.
const { readFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const BUNDLE = join(__dirname, '..', 'dist', 'vmctl.cjs');

/** The code cache file of a bundle. */
function cachePath(file) {
  return `${file}.cache`;
}

/**
 * Compiles and runs a CommonJS bundle with its code cache, if any; returns its exports, the
 * compiled script (the build asks it for a fresh cache) and what became of the cache:
 * 'accepted', 'rejected' or 'none'.
 */
function loadBundle(file = BUNDLE, { useCache = true } = {}) {
  let source;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`vmctl: ${file}: ${err.message} (run npm run build)\n`);
    process.exit(1);
  }
  let cachedData;
  if (useCache) {
    try {
      cachedData = readFileSync(cachePath(file));
    } catch {
      // No cache: V8 compiles the bundle as it would any script.
    }
  }
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new Script(wrapped, { filename: file, cachedData });
  const mod = { exports: {} };
  script
    .runInThisContext()
    .call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file));
  let cache = 'none';
  if (cachedData !== undefined) cache = script.cachedDataRejected ? 'rejected' : 'accepted';
  return { exports: mod.exports, script, cache };
}

module.exports = { BUNDLE, cachePath, loadBundle };

if (require.main === module) {
  const { main, processIo } = loadBundle().exports;
  const io = processIo();
  main(process.argv.slice(2), io).then((code) => {
    process.exitCode = code;
    // Let stdout drain (a pipe to a slow reader), then leave: a console relay or the events
    // stream may still hold handles that would keep the process alive.
    io.drained().then(() => process.exit());
  });
}
