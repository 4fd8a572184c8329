#!/usr/bin/env node
import { main } from '../dist/src/cli/vmd.js';

process.exitCode = await main(process.argv.slice(2));
// The daemon's handles (socket, VM watches) are closed by then; leave nothing behind.
process.exit();
