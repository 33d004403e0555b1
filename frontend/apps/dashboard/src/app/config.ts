/**
 * What the server tells the dashboard before anyone signs in: `GET /api/v1/config`
 * (public), `{"oidc": null | {"issuer", "client_id", "scope"}, "demo": bool}`.
 *
 * The answer decides which sign-in the app shows, so a malformed one is refused
 * with a message naming the field rather than half-used.
 */

export interface OidcConfig {
  /** The provider's issuer URL; its discovery document is `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  /** The public client the dashboard signs in as (no secret). */
  client_id: string;
  /** Space-separated scopes to ask for; always includes `openid`. */
  scope: string;
}

export interface AppConfig {
  oidc: OidcConfig | null;
  demo: boolean;
}

export const CONFIG_PATH = '/api/v1/config';
/** Largest config body read; the real one is a few hundred bytes. */
export const MAX_CONFIG_BYTES = 16_384;
const MAX_URL = 2048;
const MAX_CLIENT_ID = 256;
const MAX_SCOPE = 1024;
/** How long to wait for the server's answer. */
export const CONFIG_TIMEOUT_MS = 10_000;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function text(value: unknown, field: string, max: number): string {
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(`${field} must be a non-empty string`);
  if (value.length > max) throw new ConfigError(`${field} is longer than ${max} characters`);
  return value;
}

function parseOidc(value: unknown): OidcConfig | null {
  if (value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('oidc must be an object or null');
  const o = value as Record<string, unknown>;
  const issuer = text(o['issuer'], 'oidc.issuer', MAX_URL);
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new ConfigError('oidc.issuer is not a URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError('oidc.issuer must be an http(s) URL');
  const client_id = text(o['client_id'], 'oidc.client_id', MAX_CLIENT_ID);
  const scope = text(o['scope'], 'oidc.scope', MAX_SCOPE);
  if (!scope.split(/\s+/).includes('openid')) throw new ConfigError('oidc.scope must include openid');
  return { issuer, client_id, scope };
}

/** The config from its JSON text; ConfigError names the first bad field. */
export function parseAppConfig(body: string): AppConfig {
  if (body.length > MAX_CONFIG_BYTES) throw new ConfigError(`config is larger than ${MAX_CONFIG_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new ConfigError('config is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError('config must be an object');
  const v = value as Record<string, unknown>;
  if (!('oidc' in v)) throw new ConfigError('oidc is missing');
  if (typeof v['demo'] !== 'boolean') throw new ConfigError('demo must be true or false');
  return { oidc: parseOidc(v['oidc']), demo: v['demo'] };
}

/** Read at most `max` bytes of a response body; ConfigError past it. */
async function boundedText(res: Response, max: number): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) throw new ConfigError(`config is larger than ${max} bytes`);
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw new ConfigError(`config is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
}

/** `GET /api/v1/config` from `baseUrl` (the app's origin). */
export async function fetchAppConfig(
  baseUrl: string,
  fetchFn: typeof fetch = (...args) => globalThis.fetch(...args),
  timeoutMs = CONFIG_TIMEOUT_MS,
): Promise<AppConfig> {
  let res: Response;
  try {
    res = await fetchFn(new URL(CONFIG_PATH, baseUrl).toString(), {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new ConfigError(`the server did not answer (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new ConfigError(`the server answered HTTP ${res.status}`);
  }
  return parseAppConfig(await boundedText(res, MAX_CONFIG_BYTES));
}
