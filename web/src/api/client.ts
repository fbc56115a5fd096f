/** The typed API client, generated from the server's OpenAPI document (schema.d.ts), and problem helpers. */
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];
export type Problem = Schemas['Problem'];

export function makeClient(middleware: Middleware[] = []) {
  const client = createClient<paths>({ baseUrl: location.origin });
  for (const m of middleware) client.use(m);
  return client;
}

/** A problem from an error body, or a synthetic one when the network or server failed without one. */
export function asProblem(error: unknown, status?: number): Problem {
  if (error && typeof error === 'object' && 'code' in error && typeof (error as Problem).code === 'string') {
    return error as Problem;
  }
  return { type: 'about:blank', title: 'Error', status: status ?? 0, code: status ? 'internal' : 'network' };
}

export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.code);
  }
}

/** Unwraps an openapi-fetch result: the data, or an `ApiError` carrying the problem. */
export function must<T>(r: { data?: T; error?: unknown; response: Response }): T {
  if (r.error !== undefined || !r.response.ok) throw new ApiError(asProblem(r.error, r.response.status));
  return r.data as T;
}

/** base64url without padding, both ways. */
export function b64url(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
export function unb64url(s: string): Uint8Array {
  const t = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4));
  return Uint8Array.from(t, (c) => c.charCodeAt(0));
}
