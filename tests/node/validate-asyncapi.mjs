// Parses an AsyncAPI document with the AsyncAPI initiative's own parser (@asyncapi/parser:
// the AsyncAPI JSON Schema, $ref resolution, payload schemas, and its Spectral rules) and
// prints what it found, as one JSON line. Used by tests/asyncapi.rs.
//
//   node validate-asyncapi.mjs <document.json>
//
// Exit codes: 0 valid (no diagnostic of severity error), 3 invalid, 2 unreadable input.

import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const [path] = process.argv.slice(2);
let text;
try {
  text = await readFile(path, 'utf8');
} catch (e) {
  process.stderr.write(`cannot read ${path}: ${e.message}\n`);
  process.exit(2);
}

const { document, diagnostics } = await new Parser().parse(text);
const severities = ['error', 'warning', 'information', 'hint'];
const report = {
  valid: document !== undefined && !diagnostics.some((d) => d.severity === DiagnosticSeverity.Error),
  version: document?.version() ?? null,
  channels: document ? document.channels().all().map((c) => c.address()) : [],
  operations: document
    ? document.operations().all().map((o) => ({ id: o.id(), action: o.action(), messages: o.messages().all().length }))
    : [],
  messages: document ? document.components().messages().all().map((m) => m.id()) : [],
  diagnostics: diagnostics.map((d) => ({
    severity: severities[d.severity] ?? String(d.severity),
    code: d.code,
    message: d.message,
    path: d.path.join('.'),
  })),
};
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(report.valid ? 0 : 3);
