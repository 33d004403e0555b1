import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, fetchAppConfig, MAX_CONFIG_BYTES, parseAppConfig } from './config';

const OIDC = { issuer: 'https://idp.example.test/realms/sec', client_id: 'secstream-dashboard', scope: 'openid profile' };

let server: Server | null = null;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(null)));
  server = null;
});

/** A real HTTP server answering `/api/v1/config` with `answer`. */
async function serve(answer: (res: ServerResponse) => void): Promise<string> {
  const paths: string[] = [];
  server = createServer((req, res) => {
    paths.push(req.url ?? '');
    if (req.url !== '/api/v1/config') return void res.writeHead(404).end();
    answer(res);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const json = (body: unknown) => (res: ServerResponse) =>
  res.writeHead(200, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));

describe('GET /api/v1/config', () => {
  it('reads an OpenID Connect config and a demo config', async () => {
    const base = await serve(json({ oidc: OIDC, demo: false }));
    await expect(fetchAppConfig(base)).resolves.toEqual({ oidc: OIDC, demo: false });
    server!.closeAllConnections();
    await new Promise((r) => server!.close(r));
    const demo = await serve(json({ oidc: null, demo: true }));
    await expect(fetchAppConfig(demo)).resolves.toEqual({ oidc: null, demo: true });
  });

  it.each([
    ['not JSON', '{"oidc": ', 'config is not JSON'],
    ['an array', '[]', 'config must be an object'],
    ['no oidc field', '{"demo": true}', 'oidc is missing'],
    ['demo not a boolean', '{"oidc": null, "demo": "yes"}', 'demo must be true or false'],
    ['oidc a string', '{"oidc": "https://idp", "demo": false}', 'oidc must be an object or null'],
    ['issuer missing', JSON.stringify({ oidc: { ...OIDC, issuer: undefined }, demo: false }), 'oidc.issuer must be a non-empty string'],
    ['issuer not a URL', JSON.stringify({ oidc: { ...OIDC, issuer: 'idp.example' }, demo: false }), 'oidc.issuer is not a URL'],
    ['issuer not http(s)', JSON.stringify({ oidc: { ...OIDC, issuer: 'javascript:alert(1)' }, demo: false }), 'oidc.issuer must be an http(s) URL'],
    ['issuer too long', JSON.stringify({ oidc: { ...OIDC, issuer: `https://a/${'x'.repeat(2048)}` }, demo: false }), 'oidc.issuer is longer than 2048 characters'],
    ['client_id empty', JSON.stringify({ oidc: { ...OIDC, client_id: ' ' }, demo: false }), 'oidc.client_id must be a non-empty string'],
    ['client_id too long', JSON.stringify({ oidc: { ...OIDC, client_id: 'c'.repeat(257) }, demo: false }), 'oidc.client_id is longer than 256 characters'],
    ['scope without openid', JSON.stringify({ oidc: { ...OIDC, scope: 'profile' }, demo: false }), 'oidc.scope must include openid'],
    ['scope not a string', JSON.stringify({ oidc: { ...OIDC, scope: ['openid'] }, demo: false }), 'oidc.scope must be a non-empty string'],
  ])('refuses a config that is %s, naming why', async (_what, body, message) => {
    const base = await serve(json(body));
    await expect(fetchAppConfig(base)).rejects.toThrow(new ConfigError(message));
    expect(() => parseAppConfig(body)).toThrow(message);
  });

  it(`stops reading past ${MAX_CONFIG_BYTES} bytes, declared or not`, async () => {
    const big = JSON.stringify({ oidc: null, demo: true, pad: 'x'.repeat(MAX_CONFIG_BYTES) });
    const base = await serve((res) => {
      // chunked, no content-length: the reader counts
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(big.slice(0, 10_000));
      res.end(big.slice(10_000));
    });
    await expect(fetchAppConfig(base)).rejects.toThrow(`config is larger than ${MAX_CONFIG_BYTES} bytes`);
    server!.closeAllConnections();
    await new Promise((r) => server!.close(r));
    const declared = await serve(json(big));
    await expect(fetchAppConfig(declared)).rejects.toThrow(`config is larger than ${MAX_CONFIG_BYTES} bytes`);
    // just under the bound is fine
    const fits = JSON.stringify({ oidc: null, demo: true, pad: 'x'.repeat(MAX_CONFIG_BYTES - 40) });
    expect(fits.length).toBeLessThanOrEqual(MAX_CONFIG_BYTES);
    expect(parseAppConfig(fits)).toEqual({ oidc: null, demo: true });
  });

  it('says the HTTP status of a refusal, and when the server does not answer in time', async () => {
    const base = await serve((res) => res.writeHead(500).end('boom'));
    await expect(fetchAppConfig(base)).rejects.toThrow('the server answered HTTP 500');
    server!.closeAllConnections();
    await new Promise((r) => server!.close(r));
    const silent = await serve(() => undefined); // never answers
    const started = Date.now();
    await expect(fetchAppConfig(silent, undefined, 300)).rejects.toThrow(/the server did not answer/);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
