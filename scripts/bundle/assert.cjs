'use strict';
// What vmctl's bundle gives for node:assert: the two checks yargs makes, with the same
// outcome (a throw when the check fails), without loading node:assert. yargs catches these
// throws or lets them through as bugs; it never looks at the error's class.

function strictEqual(actual, expected, message) {
  if (!Object.is(actual, expected)) {
    throw new Error(message ?? `expected ${String(expected)}, got ${String(actual)}`);
  }
}

function notStrictEqual(actual, expected, message) {
  if (Object.is(actual, expected)) {
    throw new Error(message ?? `expected a value other than ${String(expected)}`);
  }
}

module.exports = { strictEqual, notStrictEqual };
