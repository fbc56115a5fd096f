/** The scanner app: enrol with a one-time code, choose the gate, scan online or offline, sync. */
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { makeClient, must, asProblem, type Schemas } from '../api/client';
import { verify } from '../credential/verify';
import { Store } from '../lib/idb';
import { getLang, onLang, problemText, setLang, t } from '../lib/i18n';
import { registerWorker } from '../lib/pwa';
import { startCamera } from './camera';
import { signal } from './feedback';
import {
  applyUpload,
  type Bundle,
  decide,
  mergeBundle,
  nextBatch,
  type QueuedScan,
  ring,
  type UploadVerdict,
  uuidHex,
} from './offline';
import '../styles.css';

interface Device {
  token: string;
  device_id: string;
  event_id: string;
  gate_ids: string[];
}
interface Counters {
  admitted: number;
  rejected: number;
}
interface Shown {
  ok: boolean;
  reason: string;
  detail: string;
  offline: boolean;
  display?: Schemas['DisplayOut'] | null;
  first_gate?: string | null;
  first_used_at?: string | null;
}

const db = new Store('entrada-scanner', ['kv', 'queue']);
const kv = {
  get: <T,>(k: string) => db.get<T>('kv', k),
  put: (k: string, v: unknown) => db.put('kv', k, v),
};

function deviceClient(token: string) {
  return makeClient([
    {
      onRequest({ request }) {
        request.headers.set('authorization', `Device ${token}`);
        return request;
      },
    },
  ]);
}

function App() {
  const [, rerender] = useState(0);
  useEffect(() => onLang(() => rerender((n) => n + 1)), []);
  const [device, setDevice] = useState<Device | null | undefined>(undefined);
  const [bundle, setBundle] = useState<Bundle | undefined>();
  const [gate, setGate] = useState<string | undefined>();
  useEffect(() => {
    void (async () => {
      setDevice((await kv.get<Device>('device')) ?? null);
      setBundle(await kv.get<Bundle>('bundle'));
      setGate(await kv.get<string>('gate'));
    })();
  }, []);
  if (device === undefined) return <p class="pad">{t().loading}</p>;
  const header = (
    <header class="bar">
      <strong>
        {t().app_name} · {t().scanner}
      </strong>
      <LangSwitch />
    </header>
  );
  if (!device) {
    return (
      <>
        {header}
        <Enrol
          onDone={async (d, b) => {
            await kv.put('device', d);
            await kv.put('bundle', b);
            setBundle(b);
            setDevice(d);
          }}
        />
      </>
    );
  }
  const gates = (bundle?.gates ?? []).filter((g) => device.gate_ids.includes(g.id));
  if (!gate || !gates.some((g) => g.id === gate)) {
    return (
      <>
        {header}
        <main class="pad">
          <h1>{t().choose_gate}</h1>
          {gates.length === 0 && <p>{t().loading}</p>}
          <ul class="list">
            {gates.map((g) => (
              <li key={g.id}>
                <button
                  class="big"
                  onClick={async () => {
                    await kv.put('gate', g.id);
                    setGate(g.id);
                  }}
                >
                  {g.name} <small>({g.zone_name})</small>
                </button>
              </li>
            ))}
          </ul>
        </main>
      </>
    );
  }
  return (
    <>
      {header}
      <Scanner
        device={device}
        gateId={gate}
        gateName={gates.find((g) => g.id === gate)?.name ?? ''}
        bundle={bundle}
        onBundle={setBundle}
        onChangeGate={async () => {
          await db.delete('kv', 'gate');
          setGate(undefined);
        }}
        onForget={async () => {
          await db.clear('kv');
          await db.clear('queue');
          setDevice(null);
          setGate(undefined);
        }}
      />
    </>
  );
}

function LangSwitch() {
  return (
    <select aria-label={t().language} value={getLang()} onChange={(e) => setLang(e.currentTarget.value as 'en' | 'es')}>
      <option value="en">English</option>
      <option value="es">Español</option>
    </select>
  );
}

function Enrol({ onDone }: { onDone: (d: Device, b: Bundle) => Promise<void> }) {
  const [code, setCode] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [camera, setCamera] = useState(false);
  const video = useRef<HTMLVideoElement>(null);
  const submit = async (value: string) => {
    setBusy(true);
    setError('');
    try {
      const out = must(await makeClient().POST('/api/v1/scanner/enrol', { body: { code: value.trim() } }));
      const b = must(await deviceClient(out.device_token).GET('/api/v1/scanner/bundle', {}));
      await onDone({ token: out.device_token, device_id: out.device_id, event_id: out.event_id, gate_ids: out.gate_ids }, b);
    } catch (e) {
      const p = e instanceof Error && 'problem' in e ? (e as { problem: Schemas['Problem'] }).problem : asProblem(null);
      setError(problemText(p.code, p.detail));
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    if (!camera || !video.current) return;
    let stop: (() => void) | undefined;
    startCamera(video.current, (text) => {
      stop?.();
      setCamera(false);
      setCode(text);
      void submit(text);
    })
      .then((s) => (stop = s))
      .catch(() => setCamera(false));
    return () => stop?.();
  }, [camera]);
  return (
    <main class="pad">
      <h1>{t().enrol}</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit(code);
        }}
      >
        <label>
          {t().enrol_code}
          <input name="code" value={code} autocomplete="off" required onInput={(e) => setCode(e.currentTarget.value)} />
        </label>
        <button type="submit" class="big" disabled={busy}>
          {t().enrol_submit}
        </button>
      </form>
      <button type="button" onClick={() => setCamera(!camera)}>
        {camera ? t().camera_stop : t().scan_code}
      </button>
      {camera && <video ref={video} class="camera" muted />}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
    </main>
  );
}

function Scanner(props: {
  device: Device;
  gateId: string;
  gateName: string;
  bundle: Bundle | undefined;
  onBundle: (b: Bundle) => void;
  onChangeGate: () => Promise<void>;
  onForget: () => Promise<void>;
}) {
  const { device, gateId } = props;
  const client = useRef(deviceClient(device.token)).current;
  const [online, setOnline] = useState(navigator.onLine);
  const [syncing, setSyncing] = useState(false);
  const [queued, setQueued] = useState(0);
  const [counters, setCounters] = useState<Counters>({ admitted: 0, rejected: 0 });
  const [conflicts, setConflicts] = useState<UploadVerdict[]>([]);
  const [lastSync, setLastSync] = useState<string | null>(null);
  const [shown, setShown] = useState<Shown | null>(null);
  const [last, setLast] = useState<Shown | null>(null);
  const [camera, setCamera] = useState(false);
  const [wedge, setWedge] = useState('');
  const video = useRef<HTMLVideoElement>(null);
  const wedgeInput = useRef<HTMLInputElement>(null);
  const bundleRef = useRef(props.bundle);
  bundleRef.current = props.bundle;
  const recent = useRef(new Map<string, number>());
  const syncLock = useRef(false);

  const refreshQueue = async () => setQueued((await db.all<QueuedScan>('queue')).length);

  useEffect(() => {
    void (async () => {
      setCounters((await kv.get<Counters>('counters')) ?? { admitted: 0, rejected: 0 });
      setConflicts((await kv.get<UploadVerdict[]>('conflicts')) ?? []);
      setLastSync((await kv.get<string>('lastSync')) ?? null);
      await refreshQueue();
    })();
    const up = () => {
      setOnline(true);
      void sync();
    };
    const down = () => setOnline(false);
    addEventListener('online', up);
    addEventListener('offline', down);
    const timer = setInterval(() => void sync(), 5000);
    void sync();
    return () => {
      removeEventListener('online', up);
      removeEventListener('offline', down);
      clearInterval(timer);
    };
  }, []);

  /** Uploads queued offline scans (idempotent by nonce) and pulls revocations since the bundle's cursor. */
  async function sync() {
    if (!navigator.onLine || syncLock.current) return;
    syncLock.current = true;
    setSyncing(true);
    try {
      for (;;) {
        const queue = await db.all<QueuedScan>('queue');
        const batch = nextBatch(queue);
        if (batch.length === 0) break;
        const out = must(
          await client.POST('/api/v1/scanner/scans', {
            body: {
              scans: batch.map((q) => ({
                payload: q.payload,
                gate_id: q.gate_id,
                nonce: q.nonce,
                offline: true,
                admitted: q.admitted,
                scanned_at: q.scanned_at,
              })),
            },
          }),
        );
        const { remaining, conflicts: found } = applyUpload(batch, out.verdicts);
        const keep = new Set(remaining.map((r) => r.nonce));
        for (const q of batch) if (!keep.has(q.nonce)) await db.delete('queue', q.nonce);
        if (found.length) {
          const all = [...((await kv.get<UploadVerdict[]>('conflicts')) ?? []), ...found];
          await kv.put('conflicts', all);
          setConflicts(all);
        }
        if (remaining.length === batch.length) break;
      }
      const old = bundleRef.current;
      const delta = must(
        await client.GET('/api/v1/scanner/bundle', { params: { query: old ? { cursor: old.next_cursor } : {} } }),
      );
      const merged = mergeBundle(old, delta);
      await kv.put('bundle', merged);
      props.onBundle(merged);
      const now = new Date().toISOString();
      await kv.put('lastSync', now);
      setLastSync(now);
    } catch {
      /* offline or server unavailable: the next round tries again */
    } finally {
      await refreshQueue();
      syncLock.current = false;
      setSyncing(false);
    }
  }

  async function bump(ok: boolean) {
    const c = (await kv.get<Counters>('counters')) ?? { admitted: 0, rejected: 0 };
    const next = ok ? { ...c, admitted: c.admitted + 1 } : { ...c, rejected: c.rejected + 1 };
    await kv.put('counters', next);
    setCounters(next);
  }

  async function markUsed(ticketHex: string) {
    const used = (await kv.get<Record<string, number>>('used')) ?? {};
    used[ticketHex] = (used[ticketHex] ?? 0) + 1;
    await kv.put('used', used);
  }

  async function decideOffline(payload: string, nonce: string, scannedAt: string): Promise<Shown> {
    const b = bundleRef.current;
    if (!b) return { ok: false, reason: 'unknown_key', detail: problemText('unknown_key'), offline: true };
    const outcome = await verify(payload, {
      event_id: uuidHex(b.event_id),
      keys: ring(b),
      now: Math.floor(Date.now() / 1000),
    });
    const used = new Map(Object.entries((await kv.get<Record<string, number>>('used')) ?? {}));
    const v = decide(outcome, b, gateId, used, Date.now());
    if (v.ok && v.ticket_id) await markUsed(v.ticket_id);
    await db.put('queue', nonce, { nonce, payload, gate_id: gateId, scanned_at: scannedAt, admitted: v.ok });
    await refreshQueue();
    return {
      ok: v.ok,
      reason: v.reason,
      detail: problemText(v.reason),
      offline: true,
      display: v.ticket_type ? { ticket_type: v.ticket_type, holder_display_name: '' } : null,
    };
  }

  async function scan(raw: string, fromCamera = false) {
    const payload = raw.trim();
    if (!payload) return;
    if (fromCamera) {
      // The camera sees the same code many times a second: one verdict per code per 3 s. A hardware scanner
      // or a person typing sends a code once, so a repeat there is a real second presentation.
      const seen = recent.current.get(payload);
      if (seen && Date.now() - seen < 3000) return;
      recent.current.set(payload, Date.now());
    }
    const nonce = crypto.randomUUID();
    const scannedAt = new Date().toISOString();
    let result: Shown | null = null;
    if (navigator.onLine) {
      try {
        const r = await client.POST('/api/v1/scanner/scan', { body: { payload, gate_id: gateId, nonce } });
        if (r.data) {
          const v = r.data;
          if (v.ok && v.ticket_id) await markUsed(uuidHex(v.ticket_id));
          result = {
            ok: v.ok,
            reason: v.reason,
            detail: problemText(v.reason),
            offline: false,
            display: v.display ?? null,
            first_gate: v.first_gate ?? null,
            first_used_at: v.first_used_at ?? null,
          };
        } else if (r.response.status < 500) {
          const p = asProblem(r.error, r.response.status);
          result = { ok: false, reason: p.code, detail: problemText(p.code, p.detail), offline: false };
        }
      } catch {
        /* the network is gone: decide on the device */
      }
    }
    result ??= await decideOffline(payload, nonce, scannedAt);
    await bump(result.ok);
    signal(result.ok);
    setShown(result);
    setLast(result);
    setTimeout(() => {
      setShown(null);
      wedgeInput.current?.focus();
    }, 900);
  }

  useEffect(() => {
    if (!camera || !video.current) return;
    let stop: (() => void) | undefined;
    startCamera(video.current, (text) => void scan(text, true))
      .then((s) => (stop = s))
      .catch(() => setCamera(false));
    return () => stop?.();
  }, [camera]);

  const status = !online ? t().offline : syncing ? t().syncing : t().online;
  return (
    <main class="pad scanner">
      <section class="status" aria-live="polite">
        <span data-testid="net" class={online ? 'pill ok' : 'pill bad'}>
          {status}
        </span>
        <span>
          {t().gate}: <strong data-testid="gate">{props.gateName}</strong>
        </span>
        <span>
          {t().queued}: <strong data-testid="queued">{queued}</strong>
        </span>
        <span>
          {t().admitted}: <strong data-testid="admitted">{counters.admitted}</strong>
        </span>
        <span>
          {t().rejected}: <strong data-testid="rejected">{counters.rejected}</strong>
        </span>
        <span>
          {t().conflicts}: <strong data-testid="conflicts">{conflicts.length}</strong>
        </span>
        <small>
          {t().last_sync}: {lastSync ? new Date(lastSync).toLocaleTimeString() : t().never}
        </small>
      </section>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const v = wedge;
          setWedge('');
          void scan(v);
        }}
      >
        <label>
          {t().wedge}
          <input
            ref={wedgeInput}
            name="wedge"
            value={wedge}
            autocomplete="off"
            autofocus
            onInput={(e) => setWedge(e.currentTarget.value)}
          />
        </label>
      </form>
      <button class="big" onClick={() => setCamera(!camera)}>
        {camera ? t().camera_stop : t().camera_start}
      </button>
      {camera && <video ref={video} class="camera" muted />}
      {last && (
        <p data-testid="last-verdict" data-reason={last.reason} class={last.ok ? 'ok' : 'error'}>
          {last.ok ? t().admit : t().deny}: {last.detail}
          {last.offline ? ` (${t().offline})` : ''}
        </p>
      )}
      {conflicts.length > 0 && (
        <ul class="conflicts" data-testid="conflict-list">
          {conflicts.map((c) => (
            <li key={c.nonce}>
              {t().conflicts}: {c.ticket_id ?? ''} · {problemText(c.reason)}
            </li>
          ))}
        </ul>
      )}
      <p class="actions">
        <button class="link" onClick={() => void props.onChangeGate()}>
          {t().choose_gate}
        </button>
        <button class="link" onClick={() => void props.onForget()}>
          {t().unenrol}
        </button>
      </p>
      {shown && (
        <div
          class={`verdict ${shown.ok ? 'admit' : 'deny'}`}
          role="alert"
          data-testid="verdict"
          data-reason={shown.reason}
          onClick={() => setShown(null)}
        >
          <div class="verdict-word">{shown.ok ? t().admit : t().deny}</div>
          <div class="verdict-reason">{shown.detail}</div>
          {shown.display && (
            <div class="verdict-display">
              {shown.display.ticket_type}
              {shown.display.holder_display_name ? ` · ${shown.display.holder_display_name}` : ''}
              {shown.display.seat ? ` · ${shown.display.seat}` : ''}
            </div>
          )}
          {shown.first_gate && (
            <div class="verdict-display">
              {shown.first_gate} · {shown.first_used_at ? new Date(shown.first_used_at).toLocaleTimeString() : ''}
            </div>
          )}
          <div class="verdict-gate">
            {t().gate}: {props.gateName}
            {shown.offline ? ` · ${t().offline}` : ''}
          </div>
        </div>
      )}
    </main>
  );
}

document.documentElement.lang = getLang();
render(<App />, document.getElementById('app')!);
registerWorker('/scan/sw.js', '/scan/');
