import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generate, OUTPUT, SCHEMA } from '../../scripts/protocolTypes.mjs';

describe('generated protocol types', () => {
  it('are what docs/api/asyncapi.json generates (run scripts/protocolTypes.mjs when not)', async () => {
    expect(readFileSync(OUTPUT, 'utf8')).toBe(await generate());
  });

  it('change when a frame of the schema changes', async () => {
    const doc = JSON.parse(readFileSync(SCHEMA, 'utf8'));
    doc.components.schemas.Acked.properties.extra = { type: 'integer' };
    const changed = await generate(JSON.stringify(doc));
    expect(changed).not.toBe(readFileSync(OUTPUT, 'utf8'));
    expect(changed).toMatch(/extra\?: number/);
  });

  it('carry the frames of contract v2', () => {
    const text = readFileSync(OUTPUT, 'utf8');
    expect(text).toMatch(/export interface ConnectionInfo \{\s+type: "connection.info";/);
    expect(text).toMatch(/latest\?: boolean/);
    expect(text).toMatch(/export interface TestProgressEvent \{/);
  });
});
