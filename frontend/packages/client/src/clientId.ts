/** The durable `client_id` of contract section 4, kept in localStorage. */

import { CLIENT_ID_PATTERN } from './protocol.js';

export type KeyValueStore = Pick<Storage, 'getItem' | 'setItem'>;

export const CLIENT_ID_KEY = 'secstream.client_id';

export function randomClientId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = new Uint8Array(20);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let out = 'web-';
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

/** The stored id when it is valid, else a new one (stored when `store` allows). */
export function durableClientId(store: KeyValueStore | null, key = CLIENT_ID_KEY): string {
  let stored: string | null = null;
  try {
    stored = store?.getItem(key) ?? null;
  } catch {
    stored = null; // storage disabled (privacy mode)
  }
  if (stored && CLIENT_ID_PATTERN.test(stored)) return stored;
  const fresh = randomClientId();
  try {
    store?.setItem(key, fresh);
  } catch {
    // keep the id for this page only
  }
  return fresh;
}
