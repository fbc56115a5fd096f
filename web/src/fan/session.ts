/**
 * The fan's session: access and refresh tokens kept in localStorage, refreshed quietly a minute before the
 * access token expires and once more on a 401. Refresh tokens are single use, so one refresh runs at a time.
 */
import type { Middleware } from 'openapi-fetch';
import { makeClient, type Schemas } from '../api/client';

interface Tokens {
  access: string;
  refresh: string;
  expiresAt: number;
  user: Schemas['UserResponse'];
}
const KEY = 'entrada.session';

let tokens: Tokens | null = (() => {
  try {
    return JSON.parse(localStorage.getItem(KEY) ?? 'null') as Tokens | null;
  } catch {
    return null;
  }
})();
const listeners = new Set<() => void>();

export const currentUser = () => tokens?.user ?? null;
export function onSession(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

export function setSession(r: Schemas['TokenResponse'] | null): void {
  tokens = r
    ? { access: r.access_token, refresh: r.refresh_token, expiresAt: Date.now() + r.expires_in * 1000, user: r.user }
    : null;
  if (tokens) localStorage.setItem(KEY, JSON.stringify(tokens));
  else localStorage.removeItem(KEY);
  listeners.forEach((f) => f());
}

const plain = makeClient();
let refreshing: Promise<boolean> | null = null;

function reload(): void {
  try {
    tokens = JSON.parse(localStorage.getItem(KEY) ?? 'null') as Tokens | null;
  } catch {
    tokens = null;
  }
}

/**
 * Exchanges the refresh token; on a refused token the session ends (the user logs in again). Tabs share the
 * session, and a refresh token works once (a second use ends the session as a theft), so the exchange runs under
 * a cross-tab lock and is skipped when another tab already did it.
 */
export function refresh(): Promise<boolean> {
  const seen = tokens?.refresh;
  const run = async (): Promise<boolean> => {
    reload();
    const t = tokens;
    if (!t) return false;
    if (t.refresh !== seen) return true;
    try {
      const r = await plain.POST('/api/v1/auth/refresh', { body: { refresh_token: t.refresh } });
      if (r.data) {
        setSession(r.data);
        return true;
      }
      if (r.response.status === 401) setSession(null);
      return false;
    } catch {
      return false;
    }
  };
  if (!refreshing) {
    const locked: Promise<boolean> = navigator.locks
      ? navigator.locks.request('entrada.refresh', () => run()).then((x) => x)
      : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

const auth: Middleware = {
  async onRequest({ request }) {
    if (tokens && tokens.expiresAt - Date.now() < 60_000 && !request.url.includes('/auth/')) await refresh();
    if (tokens) request.headers.set('authorization', `Bearer ${tokens.access}`);
    return request;
  },
  async onResponse({ request, response }) {
    // Only requests without a body are replayed: a sent body cannot be read again.
    const replayable = request.method === 'GET' || request.method === 'DELETE';
    if (response.status !== 401 || !tokens || !replayable || request.url.includes('/auth/')) return response;
    if (!(await refresh())) return response;
    const retry = new Request(request, { headers: new Headers(request.headers) });
    retry.headers.set('authorization', `Bearer ${tokens!.access}`);
    return fetch(retry);
  },
};

export const api = makeClient([auth]);

export async function logout(): Promise<void> {
  const t = tokens;
  setSession(null);
  if (t) await plain.POST('/api/v1/auth/logout', { body: { refresh_token: t.refresh } }).catch(() => undefined);
}
