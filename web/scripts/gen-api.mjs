// Generates src/api/schema.d.ts from the OpenAPI document of a real `entrada serve`.
// `--check` fails when the committed file differs from what the current server generates.
import openapiTS, { astToString } from 'openapi-typescript';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const out = join(dirname(fileURLToPath(import.meta.url)), '../src/api/schema.d.ts');
const check = process.argv.includes('--check');

const server = await startServer();
let doc;
try {
  doc = await (await fetch(`${server.base}/api/openapi.json`)).json();
} finally {
  await server.stop();
}
/**
 * Prose (descriptions, summaries, examples) is dropped before generating: the committed client then changes only
 * when the API's shape changes, not when a handler's doc comment is reworded. Property names such as
 * `description` inside `properties` are fields, not prose, and stay.
 */
function shapeOnly(node, parentKey = '') {
  if (Array.isArray(node)) return node.map((x) => shapeOnly(x));
  if (!node || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    const prose = ['description', 'summary', 'example', 'examples', 'title'].includes(k);
    if (prose && parentKey !== 'properties' && typeof v !== 'object') continue;
    if (prose && parentKey !== 'properties' && k.startsWith('example')) continue;
    out[k] = shapeOnly(v, k);
  }
  return out;
}

const header = '// Generated from the OpenAPI document by `npm run gen:api`; do not edit.\n\n';
const text = header + astToString(await openapiTS(shapeOnly(doc), { alphabetize: true }));
if (check) {
  let old = '';
  try { old = readFileSync(out, 'utf8'); } catch { /* missing */ }
  if (old !== text) {
    console.error('web/src/api/schema.d.ts is out of date with the server: run `npm run gen:api` in web/ and commit it');
    process.exit(1);
  }
  console.log('API client types match the OpenAPI document');
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
