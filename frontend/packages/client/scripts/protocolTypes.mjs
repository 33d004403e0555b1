// TypeScript types of the wire frames, generated from docs/api/asyncapi.json
// (itself printed by `secstream schema` from the service's msgspec types).
//   node scripts/protocolTypes.mjs          writes src/generated/protocol.ts
//   node scripts/protocolTypes.mjs --check  exits 1 when that file is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const here = dirname(fileURLToPath(import.meta.url));
export const SCHEMA = resolve(here, '../../../../docs/api/asyncapi.json');
export const OUTPUT = resolve(here, '../src/generated/protocol.ts');

const BANNER = `/* eslint-disable */
/**
 * GENERATED from docs/api/asyncapi.json by frontend/packages/client/scripts/protocolTypes.mjs: do not edit.
 * Regenerate: secstream schema > docs/api/asyncapi.json && npm --prefix frontend run protocol
 */`;

/** Objects with no declared members (`dict[str, Any]`) and event data stay open. */
function openObjects(node, title) {
  if (Array.isArray(node)) return node.map((n) => openObjects(n));
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = key === '$ref' ? value.replace('#/components/schemas/', '#/$defs/') : openObjects(value);
  }
  const bare = out.type === 'object' && out.properties === undefined;
  if ((bare || (title ?? '').endsWith('Data') || title === 'RunSummary')
      && out.additionalProperties === undefined) {
    out.additionalProperties = true;
  }
  return out;
}

export async function generate(text = readFileSync(SCHEMA, 'utf8')) {
  const doc = JSON.parse(text);
  const schemas = doc.components.schemas;
  const defs = Object.fromEntries(
    Object.entries(schemas).map(([name, schema]) => [name, openObjects(schema, name)]),
  );
  const root = {
    title: 'AnyFrame',
    description: 'Every frame and event schema of the AsyncAPI document.',
    anyOf: Object.keys(defs).map((name) => ({ $ref: `#/$defs/${name}` })),
    $defs: defs,
  };
  const ts = await compile(root, 'AnyFrame', {
    bannerComment: BANNER,
    additionalProperties: false,
    unreachableDefinitions: true,
    declareExternallyReferenced: true,
    strictIndexSignatures: true,
    format: true,
  });
  return ts;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const ts = await generate();
  if (process.argv.includes('--check')) {
    const current = readFileSync(OUTPUT, 'utf8');
    if (current !== ts) {
      console.error(`${OUTPUT} is stale: run node scripts/protocolTypes.mjs`);
      process.exit(1);
    }
  } else {
    writeFileSync(OUTPUT, ts);
  }
}
