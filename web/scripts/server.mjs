// Starts a real `entrada serve` on embedded defaults: fresh data directory, free port, killed by PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** The debug binary from the cargo target directory (CARGO_TARGET_DIR or ../target), or ENTRADA_BIN. */
export function entradaBin() {
  if (process.env.ENTRADA_BIN) return process.env.ENTRADA_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? resolve(here, '../../target');
  const bin = join(target, 'debug', 'entrada');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo build -p entrada\` first`);
  return bin;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/**
 * Runs `entrada serve [--demo]` and waits until `/readyz` answers. Returns its base URL, the lines it printed
 * and `stop()`, which ends exactly that process and removes its data directory.
 */
export async function startServer({ demo = false, env: extra = {} } = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'entrada-web-'));
  const env = {
    ...process.env,
    ENTRADA_DATA_DIR: dataDir,
    ENTRADA_SERVER__BIND: `127.0.0.1:${port}`,
    ENTRADA_SERVER__PUBLIC_URL: base,
    ENTRADA_IDENTITY__PASSWORD_COST: 'fast',
    ENTRADA_RATE_LIMIT__AUTH_PER_IP_PER_MINUTE: '0',
    ENTRADA_LOG: process.env.ENTRADA_LOG ?? 'warn',
    ...extra,
  };
  const args = ['serve', ...(demo ? ['--demo'] : [])];
  const child = spawn(entradaBin(), args, { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b) => (out += b));
  child.stderr.on('data', (b) => (out += b));
  let exited = null;
  child.on('exit', (code) => (exited = code));
  const stop = async () => {
    if (exited === null && child.pid) {
      process.kill(child.pid, 'SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => { if (exited === null) process.kill(child.pid, 'SIGKILL'); r(); }, 5000);
        child.once('exit', () => { clearTimeout(t); r(); });
      });
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  for (let i = 0; i < 600; i++) {
    if (exited !== null) throw new Error(`entrada exited with ${exited}:\n${out}`);
    try {
      const r = await fetch(`${base}/readyz`);
      if (r.ok && (!demo || out.includes('Demo organizer'))) return { base, output: () => out, stop };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`entrada did not become ready:\n${out}`);
}
