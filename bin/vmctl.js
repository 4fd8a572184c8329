#!/usr/bin/env node
import { main } from '../dist/src/cli/vmctl.js';

process.exitCode = await main(process.argv.slice(2));
// Let stdout drain (a pipe to a slow reader), then leave: a console relay or the events
// stream may still hold handles that would keep the process alive.
process.stdout.write('', () => process.exit());
