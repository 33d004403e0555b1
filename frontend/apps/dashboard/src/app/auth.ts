/** Demo sign-in: tokens from `POST /api/v1/dev/token`, kept in localStorage across reloads. */

export interface Session {
  token: string;
  /** Epoch ms. */
  expiresAt: number;
  sub: string;
  roles: string[];
  groups: string[];
}

export const ROLES = ['admin', 'analyst', 'viewer'] as const;
const KEY = 'secstream.session';
const TOKEN_LIFETIME_S = 3600;
/** Re-mint when a token has less than this left. */
const RENEW_BEFORE_MS = 90_000;

export function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    return typeof s.token === 'string' && typeof s.sub === 'string' && Array.isArray(s.roles) ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s: Session): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    // private mode: this tab only
  }
}

export function clearSession(): void {
  try {
    localStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}

/** `expires_at` as epoch ms, whether the server sent seconds, ms or an ISO string; else the JWT's `exp`. */
export function expiryOf(expiresAt: unknown, token: string): number {
  if (typeof expiresAt === 'number' && Number.isFinite(expiresAt)) {
    return expiresAt < 1e12 ? expiresAt * 1000 : expiresAt;
  }
  if (typeof expiresAt === 'string') {
    const n = Number(expiresAt);
    if (Number.isFinite(n) && expiresAt.trim() !== '') return n < 1e12 ? n * 1000 : n;
    const t = Date.parse(expiresAt);
    if (Number.isFinite(t)) return t;
  }
  try {
    const payload = JSON.parse(atob(token.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/'))) as { exp?: number };
    if (typeof payload.exp === 'number') return payload.exp * 1000;
  } catch {
    // not a readable JWT
  }
  return Date.now() + TOKEN_LIFETIME_S * 1000;
}

export async function mintToken(sub: string, roles: string[], groups: string[] = []): Promise<Session> {
  const res = await fetch('/api/v1/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sub, roles, ...(groups.length ? { groups } : {}), expires_in: TOKEN_LIFETIME_S }),
  });
  if (!res.ok) {
    const detail = await res.text().catch(() => '');
    throw new Error(
      res.status === 404
        ? 'Demo sign-in is off on this server (start it with --demo).'
        : `Sign-in failed (HTTP ${res.status}${detail ? `: ${detail.slice(0, 200)}` : ''}).`,
    );
  }
  const body = (await res.json()) as { token: string; expires_at: unknown };
  return { token: body.token, expiresAt: expiryOf(body.expires_at, body.token), sub, roles, groups };
}

/**
 * A token provider for EventClient: the stored token while it is fresh, a new
 * one when it is close to expiry or the client asks for a fresh one.
 */
export function tokenProvider(get: () => Session, set: (s: Session) => void) {
  let inflight: Promise<Session> | null = null;
  return async (reason: string): Promise<string> => {
    const s = get();
    const wantsFresh = reason === 'expiring' || reason === 'expired' || reason === 'unauthorized';
    if (!wantsFresh && s.expiresAt - Date.now() > RENEW_BEFORE_MS) return s.token;
    inflight ??= mintToken(s.sub, s.roles, s.groups).finally(() => {
      inflight = null;
    });
    const fresh = await inflight;
    set(fresh);
    return fresh.token;
  };
}
