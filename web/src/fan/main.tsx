/** The fan app: events, checkout, the wallet and the ticket's rotating QR. */
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import qrcode from 'qrcode-generator';
import { ApiError, asProblem, must, type Schemas } from '../api/client';
import { getLang, onLang, problemText, setLang, t } from '../lib/i18n';
import { registerWorker } from '../lib/pwa';
import { credentialFor, forgetCredentials, qrText, type StoredCredential } from './holder';
import { api, currentUser, logout, onSession, setSession } from './session';
import '../styles.css';

type Ticket = Schemas['TicketView'];
type Listing = Schemas['ListingView'];
type Asset = Schemas['AssetOut'];
type WalletLink = Schemas['LinkOut'];

/** An EIP-1193 wallet injected by a browser extension (MetaMask and the like). */
interface Injected {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}
declare global {
  interface Window {
    ethereum?: Injected;
  }
}

// ------------------------------------------------------------------ routing

function usePath(): string {
  const [path, setPath] = useState(location.pathname + location.search);
  useEffect(() => {
    const f = () => setPath(location.pathname + location.search);
    addEventListener('popstate', f);
    addEventListener('entrada:navigate', f);
    return () => {
      removeEventListener('popstate', f);
      removeEventListener('entrada:navigate', f);
    };
  }, []);
  return path;
}
export function go(to: string): void {
  history.pushState(null, '', to);
  dispatchEvent(new Event('entrada:navigate'));
  scrollTo(0, 0);
}
function Link(props: { href: string; children: preact.ComponentChildren; class?: string }) {
  return (
    <a
      href={props.href}
      class={props.class}
      onClick={(e) => {
        if (e.ctrlKey || e.metaKey) return;
        e.preventDefault();
        go(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

function problemOf(e: unknown): string {
  const p = e instanceof ApiError ? e.problem : asProblem(null);
  return problemText(p.code, p.detail);
}
function ErrorText({ error }: { error: string }) {
  return error ? (
    <p role="alert" class="error">
      {error}
    </p>
  ) : null;
}

const money = (m: { amount_minor: number; currency: string }) =>
  new Intl.NumberFormat(getLang(), { style: 'currency', currency: m.currency }).format(m.amount_minor / 100);
const when = (iso: string, tz?: string) =>
  new Intl.DateTimeFormat(getLang(), { dateStyle: 'medium', timeStyle: 'short', ...(tz ? { timeZone: tz } : {}) }).format(
    new Date(iso),
  );

// ------------------------------------------------------------------ shell

function App() {
  const path = usePath();
  const [, rerender] = useState(0);
  useEffect(() => {
    const a = onLang(() => rerender((n) => n + 1));
    const b = onSession(() => rerender((n) => n + 1));
    return () => {
      a();
      b();
    };
  }, []);
  const user = currentUser();
  const mainRef = useRef<HTMLElement>(null);
  const first = useRef(true);
  useEffect(() => {
    // A screen change moves focus to the new content, so screen readers announce it.
    if (first.current) first.current = false;
    else mainRef.current?.focus({ preventScroll: true });
  }, [path]);
  const [route, query] = path.split('?') as [string, string | undefined];
  const seg = route.split('/').filter(Boolean);
  let page: preact.JSX.Element;
  if (seg[0] === 'events' && seg[1]) page = <EventPage id={seg[1]} />;
  else if (seg[0] === 'login') page = <Auth mode="login" next={new URLSearchParams(query).get('next')} />;
  else if (seg[0] === 'signup') page = <Auth mode="signup" next={new URLSearchParams(query).get('next')} />;
  else if (seg[0] === 'orders' && seg[1]) page = <Needs><OrderPage id={seg[1]} /></Needs>;
  else if (seg[0] === 'resale' && seg[1] === 'purchases' && seg[2]) page = <Needs><PurchasePage id={seg[2]} /></Needs>;
  else if (seg[0] === 'wallet') page = <Needs><Wallet /></Needs>;
  else if (seg[0] === 'tickets' && seg[1]) page = <Needs><TicketPage id={seg[1]} /></Needs>;
  else page = <Events />;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="bar">
        <Link href="/" class="brand">
          {t().app_name}
        </Link>
        <nav>
          <Link href="/">{t().events}</Link>
          <Link href="/wallet">{t().wallet}</Link>
          {user ? (
            <button
              class="link"
              onClick={async () => {
                await logout();
                await forgetCredentials();
                go('/');
              }}
            >
              {t().logout}
            </button>
          ) : (
            <Link href="/login">{t().login}</Link>
          )}
          <select
            aria-label={t().language}
            value={getLang()}
            onChange={(e) => setLang(e.currentTarget.value as 'en' | 'es')}
          >
            <option value="en">EN</option>
            <option value="es">ES</option>
          </select>
        </nav>
      </header>
      <main id="main" class="pad" tabIndex={-1} ref={mainRef}>
        {page}
      </main>
    </>
  );
}

function Needs({ children }: { children: preact.ComponentChildren }) {
  if (!currentUser()) {
    return (
      <Auth mode="login" next={location.pathname + location.search} notice={t().login_needed} />
    );
  }
  return <>{children}</>;
}

// ------------------------------------------------------------------ events

function Events() {
  const [q, setQ] = useState('');
  const [items, setItems] = useState<Schemas['EventSummary'][] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    const h = setTimeout(async () => {
      try {
        setItems(must(await api.GET('/api/v1/events', { params: { query: q ? { q } : {} } })).items);
        setError('');
      } catch (e) {
        setError(problemOf(e));
      }
    }, 200);
    return () => clearTimeout(h);
  }, [q]);
  return (
    <>
      <h1>{t().events}</h1>
      <label class="search">
        <span class="sr">{t().search}</span>
        <input type="search" placeholder={t().search} value={q} onInput={(e) => setQ(e.currentTarget.value)} />
      </label>
      <ErrorText error={error} />
      {items === null ? (
        <p>{t().loading}</p>
      ) : items.length === 0 ? (
        <p>{t().no_events}</p>
      ) : (
        <ul class="cards">
          {items.map((e) => (
            <li key={e.id} class="card">
              <Link href={`/events/${e.id}`}>
                <h2>{e.name}</h2>
                <p>
                  {when(e.starts_at, e.timezone)} · {e.venue.name}
                  {e.venue.city ? `, ${e.venue.city}` : ''}
                </p>
              </Link>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

function EventPage({ id }: { id: string }) {
  const [ev, setEv] = useState<Schemas['EventOut'] | null>(null);
  const [qty, setQty] = useState<Record<string, number>>({});
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    api
      .GET('/api/v1/events/{id}', { params: { path: { id } } })
      .then((r) => setEv(must(r)))
      .catch((e) => setError(problemOf(e)));
  }, [id]);
  if (!ev) return error ? <ErrorText error={error} /> : <p>{t().loading}</p>;
  const chosen = Object.entries(qty).filter(([, n]) => n > 0);
  const buy = async () => {
    if (!currentUser()) {
      go(`/login?next=${encodeURIComponent(location.pathname)}`);
      return;
    }
    setBusy(true);
    setError('');
    try {
      const key = crypto.randomUUID();
      const hold = must(
        await api.POST('/api/v1/holds', {
          params: { header: { 'Idempotency-Key': `hold-${key}` } },
          body: { event_id: ev.id, items: chosen.map(([ticket_type_id, quantity]) => ({ ticket_type_id, quantity })) },
        }),
      );
      let order = must(
        await api.POST('/api/v1/orders', {
          params: { header: { 'Idempotency-Key': `order-${key}` } },
          body: { hold_id: hold.id },
        }),
      );
      if (!order.checkout_url) {
        order = must(await api.POST('/api/v1/orders/{id}/checkout', { params: { path: { id: order.id } } }));
      }
      if (order.checkout_url) location.assign(order.checkout_url);
      else go(`/orders/${order.id}`);
    } catch (e) {
      setError(problemOf(e));
      setBusy(false);
    }
  };
  return (
    <article>
      <h1>{ev.name}</h1>
      <p>
        {when(ev.starts_at, ev.timezone)} · {ev.venue.name}
        {ev.venue.city ? `, ${ev.venue.city}` : ''}
      </p>
      {ev.description && <p>{ev.description}</p>}
      <h2>{t().tickets}</h2>
      <ul class="list">
        {ev.ticket_types.map((tt) => {
          const max = Math.min(tt.max_per_order, tt.available);
          const sellable = tt.on_sale_now && tt.available > 0;
          return (
            <li key={tt.id} class="row" data-testid="ticket-type">
              <div>
                <strong>{tt.name}</strong> · {money(tt.price)}
                <br />
                <small>
                  {!tt.on_sale_now ? t().not_on_sale : tt.available > 0 ? t().available(tt.available) : t().sold_out_label}
                </small>
              </div>
              {sellable && (
                <label>
                  <span class="sr">
                    {t().quantity} {tt.name}
                  </span>
                  <select
                    name={`qty-${tt.id}`}
                    value={qty[tt.id] ?? 0}
                    onChange={(e) => setQty({ ...qty, [tt.id]: Number(e.currentTarget.value) })}
                  >
                    {Array.from({ length: Math.max(0, max) + 1 }, (_, n) => (
                      <option value={n}>{n}</option>
                    ))}
                  </select>
                </label>
              )}
            </li>
          );
        })}
      </ul>
      <ErrorText error={error} />
      <button class="big" disabled={busy || chosen.length === 0} onClick={() => void buy()}>
        {t().buy}
      </button>
      <Resale eventId={ev.id} />
    </article>
  );
}

function Resale({ eventId }: { eventId: string }) {
  const [items, setItems] = useState<Listing[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    api
      .GET('/api/v1/events/{id}/listings', { params: { path: { id: eventId } } })
      .then((r) => setItems(must(r).items))
      .catch(() => setItems([]));
  }, [eventId]);
  const buy = async (l: Listing) => {
    if (!currentUser()) {
      go(`/login?next=${encodeURIComponent(location.pathname)}`);
      return;
    }
    setError('');
    try {
      const p = must(await api.POST('/api/v1/listings/{id}/purchase', { params: { path: { id: l.id } } }));
      if (p.checkout_url) location.assign(p.checkout_url);
      else go(`/resale/purchases/${p.id}`);
    } catch (e) {
      setError(problemOf(e));
    }
  };
  if (items === null) return null;
  return (
    <section>
      <h2>{t().resale}</h2>
      {items.length === 0 && <p>{t().no_resale}</p>}
      <ul class="list">
        {items
          .filter((l) => l.status === 'active')
          .map((l) => (
            <li key={l.id} class="row" data-testid="listing">
              <div>
                <strong>{l.ticket_type}</strong> · {t().serial} {l.serial}
                <br />
                {money(l.price)}
              </div>
              <button onClick={() => void buy(l)}>{t().buy_resale}</button>
            </li>
          ))}
      </ul>
      <ErrorText error={error} />
    </section>
  );
}

// ------------------------------------------------------------------ auth

function Auth(props: { mode: 'login' | 'signup'; next?: string | null; notice?: string }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const signup = props.mode === 'signup';
  const submit = async (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const email = String(f.get('email'));
    const password = String(f.get('password'));
    setBusy(true);
    setError('');
    try {
      const r = signup
        ? await api.POST('/api/v1/auth/register', {
            body: { email, password, display_name: String(f.get('display_name')) },
          })
        : await api.POST('/api/v1/auth/login', { body: { email, password } });
      setSession(must(r));
      const next = props.next && props.next.startsWith('/') && !props.next.startsWith('//') ? props.next : '/wallet';
      go(next);
    } catch (err) {
      setError(problemOf(err));
    } finally {
      setBusy(false);
    }
  };
  const qs = props.next ? `?next=${encodeURIComponent(props.next)}` : '';
  return (
    <section class="narrow">
      <h1>{signup ? t().signup : t().login}</h1>
      {props.notice && <p>{props.notice}</p>}
      <form onSubmit={(e) => void submit(e)}>
        {signup && (
          <label>
            {t().name}
            <input name="display_name" autocomplete="name" required />
          </label>
        )}
        <label>
          {t().email}
          <input name="email" type="email" autocomplete="email" required />
        </label>
        <label>
          {t().password}
          <input
            name="password"
            type="password"
            autocomplete={signup ? 'new-password' : 'current-password'}
            minLength={signup ? 10 : undefined}
            required
          />
        </label>
        <ErrorText error={error} />
        <button type="submit" class="big" disabled={busy}>
          {signup ? t().signup : t().login}
        </button>
      </form>
      <Link href={(signup ? '/login' : '/signup') + qs}>{signup ? t().have_account : t().no_account}</Link>
    </section>
  );
}

// ------------------------------------------------------------------ order

function OrderPage({ id }: { id: string }) {
  const [order, setOrder] = useState<Schemas['OrderView'] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let stop = false;
    let n = 0;
    // The payment's webhook arrives a moment after the provider's redirect: poll until the order settles.
    const poll = async () => {
      try {
        const o = must(await api.GET('/api/v1/orders/{id}', { params: { path: { id } } }));
        setOrder(o);
        if (o.status === 'pending' && !stop && n++ < 120) setTimeout(() => void poll(), 500);
      } catch (e) {
        setError(problemOf(e));
      }
    };
    void poll();
    return () => {
      stop = true;
    };
  }, [id]);
  if (!order) return error ? <ErrorText error={error} /> : <p>{t().loading}</p>;
  const failed = order.last_payment_error || new URLSearchParams(location.search).get('status') === 'failed';
  return (
    <section data-testid="order" data-status={order.status}>
      <h1>
        {t().order} · {money(order.total)}
      </h1>
      {order.status === 'paid' ? (
        <p class="ok">{t().order_paid}</p>
      ) : order.status === 'pending' ? (
        <>
          <p>{failed ? t().order_failed : t().order_pending}</p>
          {order.last_payment_error && <ErrorText error={problemText(order.last_payment_error)} />}
          {order.checkout_url && !order.last_payment_error && (
            <a class="button big" href={order.checkout_url}>
              {t().pay}
            </a>
          )}
        </>
      ) : (
        <p class="error">{problemText(`order_${order.status}`, order.status)}</p>
      )}
      <ErrorText error={error} />
      {order.status === 'paid' && (
        <Link class="button big" href="/wallet">
          {t().go_wallet}
        </Link>
      )}
    </section>
  );
}

// ------------------------------------------------------------------ wallet

const events = new Map<string, Promise<Schemas['EventOut'] | null>>();
function eventInfo(id: string) {
  if (!events.has(id)) {
    events.set(
      id,
      api.GET('/api/v1/events/{id}', { params: { path: { id } } }).then((r) => r.data ?? null, () => null),
    );
  }
  return events.get(id)!;
}

function useEvent(id: string | undefined) {
  const [ev, setEv] = useState<Schemas['EventOut'] | null>(null);
  useEffect(() => {
    if (id) void eventInfo(id).then(setEv);
  }, [id]);
  return ev;
}

const WALLET_CACHE = 'entrada.wallet';

function Wallet() {
  const [tickets, setTickets] = useState<Ticket[] | null>(() => {
    try {
      return JSON.parse(localStorage.getItem(WALLET_CACHE) ?? 'null') as Ticket[] | null;
    } catch {
      return null;
    }
  });
  const [listings, setListings] = useState<Listing[]>([]);
  const [wallet, setWallet] = useState<Schemas['WalletOut'] | null>(null);
  const [error, setError] = useState('');
  const [version, setVersion] = useState(0);
  useEffect(() => {
    api
      .GET('/api/v1/me/tickets', { params: { query: { limit: 100 } } })
      .then((r) => {
        const items = must(r).items;
        localStorage.setItem(WALLET_CACHE, JSON.stringify(items));
        setTickets(items);
      })
      .catch((e) => setError(problemOf(e)));
    api
      .GET('/api/v1/me/listings')
      .then((r) => setListings(r.data?.items ?? []))
      .catch(() => undefined);
    api
      .GET('/api/v1/me/wallet')
      .then((r) => setWallet(r.data ?? null))
      .catch(() => undefined);
  }, [version]);
  const refresh = () => setVersion((v) => v + 1);
  const active = (id: string) => listings.find((l) => l.ticket_id === id && (l.status === 'active' || l.status === 'held'));
  return (
    <>
      <h1>{t().wallet}</h1>
      <Gifts key={version} onChange={refresh} />
      <ErrorText error={tickets ? '' : error} />
      {tickets === null ? (
        !error && <p>{t().loading}</p>
      ) : tickets.length === 0 ? (
        <p>{t().wallet_empty}</p>
      ) : (
        <ul class="cards">
          {tickets.map((tk) => (
            <TicketCard
              key={tk.id}
              ticket={tk}
              listing={active(tk.id)}
              asset={wallet?.tickets.find((a) => a.ticket_id === tk.id)}
              links={wallet?.links ?? []}
              onChange={refresh}
            />
          ))}
        </ul>
      )}
      {wallet && <Wallets wallet={wallet} onChange={refresh} />}
    </>
  );
}

function ChainRows(props: {
  chain: Schemas['TokenView'] | null | undefined;
  eventId: string;
  metadataUrl?: string | undefined;
}) {
  const { chain, eventId } = props;
  if (!chain) {
    return (
      <>
        <dt>{t().mint_status}</dt>
        <dd>{t().not_minted}</dd>
      </>
    );
  }
  return (
    <>
      <dt>{t().chain}</dt>
      <dd>
        {chain.network} · {chain.chain_id}
      </dd>
      <dt>{t().contract}</dt>
      <dd class="mono">{chain.contract ?? '—'}</dd>
      <dt>{t().token_id}</dt>
      <dd class="mono" data-testid="token-id">
        {chain.token_id}
      </dd>
      <dt>{t().mint_status}</dt>
      <dd data-testid="mint-status">{chain.status}</dd>
      {chain.tx_hash && (
        <>
          <dt>{t().tx}</dt>
          <dd class="mono">{chain.tx_hash}</dd>
        </>
      )}
      <dt>{t().metadata}</dt>
      <dd>
        <a href={props.metadataUrl ?? `/api/v1/nft/${eventId}/${chain.token_id}`} target="_blank" rel="noopener">
          ERC-721 JSON
        </a>
      </dd>
    </>
  );
}

function TicketCard(props: {
  ticket: Ticket;
  listing?: Listing | undefined;
  asset?: Asset | undefined;
  links: WalletLink[];
  onChange: () => void;
}) {
  const { ticket, listing, asset, onChange } = props;
  const ev = useEvent(ticket.event_id);
  const type = ev?.ticket_types.find((x) => x.id === ticket.ticket_type_id);
  const [panel, setPanel] = useState<'' | 'gift' | 'sell' | 'history' | 'export'>('');
  const canExport = !!ev?.resale_policy.export_allowed && props.links.length > 0 && !asset?.nft.exported_to;
  const toggle = (p: typeof panel) => setPanel(panel === p ? '' : p);
  return (
    <li class="card ticket" data-testid="ticket-card" data-ticket={ticket.id}>
      <Art metadataUrl={asset?.nft.metadata_url} serial={ticket.serial} />
      <div>
        <h2>{ev?.name ?? t().ticket}</h2>
        {ev && <p>{when(ev.starts_at, ev.timezone)}</p>}
        <dl>
          <dt>{t().ticket}</dt>
          <dd>
            {type?.name ?? ''} · {t().serial} {ticket.serial}
          </dd>
          <dt>{t().status}</dt>
          <dd>{listing ? t().listed : ticket.status}</dd>
          <ChainRows chain={ticket.chain} eventId={ticket.event_id} metadataUrl={asset?.nft.metadata_url} />
          {asset?.nft.exported_to && (
            <>
              <dt>{t().exported_to}</dt>
              <dd class="mono">{asset.nft.exported_to}</dd>
            </>
          )}
        </dl>
        {ticket.status === 'valid' && (
          <>
            <Link class="button big" href={`/tickets/${ticket.id}`}>
              {t().show_qr}
            </Link>
            <div class="actions">
              {listing ? (
                <Withdraw listing={listing} onDone={onChange} />
              ) : (
                <>
                  <button class="secondary" aria-expanded={panel === 'gift'} onClick={() => toggle('gift')}>
                    {t().gift}
                  </button>
                  <button class="secondary" aria-expanded={panel === 'sell'} onClick={() => toggle('sell')}>
                    {t().sell}
                  </button>
                </>
              )}
              <button class="secondary" aria-expanded={panel === 'history'} onClick={() => toggle('history')}>
                {t().history}
              </button>
              {canExport && !listing && (
                <button class="secondary" aria-expanded={panel === 'export'} onClick={() => toggle('export')}>
                  {t().export}
                </button>
              )}
            </div>
          </>
        )}
        {panel === 'gift' && <GiftForm ticketId={ticket.id} onDone={onChange} />}
        {panel === 'sell' && <SellForm ticketId={ticket.id} onDone={onChange} />}
        {panel === 'history' && <History ticketId={ticket.id} />}
        {panel === 'export' && <ExportForm ticketId={ticket.id} links={props.links} onDone={onChange} />}
      </div>
    </li>
  );
}

function GiftForm({ ticketId, onDone }: { ticketId: string; onDone: () => void }) {
  const [error, setError] = useState('');
  const [sent, setSent] = useState(false);
  return (
    <form
      class="panel"
      onSubmit={async (e) => {
        e.preventDefault();
        const email = String(new FormData(e.currentTarget).get('recipient_email'));
        setError('');
        try {
          must(
            await api.POST('/api/v1/tickets/{id}/gifts', {
              params: { path: { id: ticketId } },
              body: { recipient_email: email },
            }),
          );
          setSent(true);
          onDone();
        } catch (err) {
          setError(problemOf(err));
        }
      }}
    >
      <label>
        {t().gift_to}
        <input name="recipient_email" type="email" required />
      </label>
      <button type="submit">{t().gift_send}</button>
      {sent && <p class="ok">{t().gift_sent}</p>}
      <ErrorText error={error} />
    </form>
  );
}

function SellForm({ ticketId, onDone }: { ticketId: string; onDone: () => void }) {
  const [terms, setTerms] = useState<Schemas['ResaleTermsView'] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    api
      .GET('/api/v1/tickets/{id}/resale-terms', { params: { path: { id: ticketId } } })
      .then((r) => setTerms(must(r)))
      .catch((e) => setError(problemOf(e)));
  }, [ticketId]);
  if (!terms) return <ErrorText error={error} />;
  if (terms.resale_refusal) return <ErrorText error={problemText(terms.resale_refusal)} />;
  const cap = terms.cap ?? null;
  const currency = terms.face_value.currency;
  return (
    <form
      class="panel"
      onSubmit={async (e) => {
        e.preventDefault();
        const amount = Math.round(Number(new FormData(e.currentTarget).get('price')) * 100);
        setError('');
        try {
          must(
            await api.POST('/api/v1/tickets/{id}/listings', {
              params: { path: { id: ticketId } },
              body: { price: { amount_minor: amount, currency } },
            }),
          );
          onDone();
        } catch (err) {
          setError(problemOf(err));
        }
      }}
    >
      <label>
        {t().price} ({currency}){cap ? ` · ${t().cap} ${money(cap)}` : ''}
        <input
          name="price"
          type="number"
          step="0.01"
          min="0.01"
          required
          defaultValue={String(terms.face_value.amount_minor / 100)}
        />
      </label>
      <button type="submit">{t().list_send}</button>
      <ErrorText error={error} />
    </form>
  );
}

function Withdraw({ listing, onDone }: { listing: Listing; onDone: () => void }) {
  const [error, setError] = useState('');
  return (
    <>
      <span class="pill">
        {t().listed} · {money(listing.price)}
      </span>
      <button
        class="secondary"
        onClick={async () => {
          try {
            must(await api.POST('/api/v1/listings/{id}/withdraw', { params: { path: { id: listing.id } } }));
            onDone();
          } catch (e) {
            setError(problemOf(e));
          }
        }}
      >
        {t().withdraw}
      </button>
      <ErrorText error={error} />
    </>
  );
}

/** The collectible's art: the `image` of its ERC-721 metadata, else a drawn card with the serial. */
function Art({ metadataUrl, serial }: { metadataUrl?: string | undefined; serial: number }) {
  const [image, setImage] = useState<{ src: string; name: string } | null>(null);
  useEffect(() => {
    if (!metadataUrl) return;
    fetch(metadataUrl)
      .then((r) => (r.ok ? (r.json() as Promise<{ image?: string; name?: string }>) : null))
      .then((m) => m?.image && setImage({ src: m.image, name: m.name ?? '' }))
      .catch(() => undefined);
  }, [metadataUrl]);
  return (
    <div class="art">
      {image ? <img src={image.src} alt={image.name} loading="lazy" /> : <span aria-hidden="true">#{serial}</span>}
    </div>
  );
}

function ExportForm(props: { ticketId: string; links: WalletLink[]; onDone: () => void }) {
  const [error, setError] = useState('');
  const [done, setDone] = useState(false);
  return (
    <form
      class="panel"
      onSubmit={async (e) => {
        e.preventDefault();
        const address = String(new FormData(e.currentTarget).get('address'));
        setError('');
        try {
          must(
            await api.POST('/api/v1/tickets/{id}/export', {
              params: { path: { id: props.ticketId } },
              body: { address },
            }),
          );
          setDone(true);
          props.onDone();
        } catch (err) {
          setError(problemOf(err));
        }
      }}
    >
      <label>
        {t().export_to}
        <select name="address">
          {props.links.map((l) => (
            <option value={l.address}>{l.address}</option>
          ))}
        </select>
      </label>
      <button type="submit">{t().export}</button>
      {done && <p class="ok">{t().export_done}</p>}
      <ErrorText error={error} />
    </form>
  );
}

/** The custodial address and the external wallets linked by Sign-In with Ethereum (EIP-4361). */
function Wallets({ wallet, onChange }: { wallet: Schemas['WalletOut']; onChange: () => void }) {
  const [error, setError] = useState('');
  const link = async () => {
    setError('');
    const eth = window.ethereum;
    if (!eth) {
      setError(problemText('no_injected_wallet'));
      return;
    }
    try {
      const [address] = (await eth.request({ method: 'eth_requestAccounts' })) as string[];
      if (!address) return;
      const challenge = must(await api.POST('/api/v1/me/wallet/links/challenge', { body: { address } }));
      const signature = (await eth.request({ method: 'personal_sign', params: [challenge.message, address] })) as string;
      must(await api.POST('/api/v1/me/wallet/links', { body: { message: challenge.message, signature } }));
      onChange();
    } catch (e) {
      setError(e instanceof ApiError ? problemOf(e) : String((e as { message?: string }).message ?? e));
    }
  };
  const unlink = async (address: string) => {
    try {
      must(await api.DELETE('/api/v1/me/wallet/links/{address}', { params: { path: { address } } }));
      onChange();
    } catch (e) {
      setError(problemOf(e));
    }
  };
  return (
    <section class="card" data-testid="wallets">
      <h2>{t().my_wallets}</h2>
      <p>
        {t().custodial} <span class="mono">{wallet.custodial_address}</span>
      </p>
      {wallet.links.length > 0 && (
        <>
          <h3>{t().linked}</h3>
          <ul class="list">
            {wallet.links.map((l) => (
              <li key={l.address} class="row">
                <span class="mono">{l.address}</span>
                <button class="secondary" onClick={() => void unlink(l.address)}>
                  {t().unlink}
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
      <button class="secondary" onClick={() => void link()}>
        {t().link_wallet}
      </button>
      <ErrorText error={error} />
    </section>
  );
}

function History({ ticketId }: { ticketId: string }) {
  const [h, setH] = useState<Schemas['HistoryView'] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    api
      .GET('/api/v1/tickets/{id}/history', { params: { path: { id: ticketId } } })
      .then((r) => setH(must(r)))
      .catch((e) => setError(problemOf(e)));
  }, [ticketId]);
  if (!h) return <ErrorText error={error} />;
  return (
    <ol class="panel history" data-testid="history">
      {h.entries.map((e) => (
        <li>
          {when(e.at)} · {e.kind}
          {e.from ? ` · ${e.from}` : ''}
          {e.to ? ` → ${e.to}` : ''}
          {e.price ? ` · ${money(e.price)}` : ''}
        </li>
      ))}
    </ol>
  );
}

function Gifts({ onChange }: { onChange: () => void }) {
  const [gifts, setGifts] = useState<Schemas['MyGiftsView'] | null>(null);
  const [error, setError] = useState('');
  const load = () =>
    api
      .GET('/api/v1/me/gifts')
      .then((r) => setGifts(must(r)))
      .catch(() => undefined);
  useEffect(() => void load(), []);
  const act = async (id: string, what: 'accept' | 'decline' | 'cancel') => {
    setError('');
    try {
      const params = { params: { path: { id } } };
      if (what === 'accept') must(await api.POST('/api/v1/gifts/{id}/accept', { ...params, body: {} }));
      else if (what === 'decline') must(await api.POST('/api/v1/gifts/{id}/decline', params));
      else must(await api.POST('/api/v1/gifts/{id}/cancel', params));
      await load();
      onChange();
    } catch (e) {
      setError(problemOf(e));
    }
  };
  if (!gifts) return null;
  const outgoing = gifts.outgoing.filter((g) => g.status === 'pending');
  if (gifts.incoming.length === 0 && outgoing.length === 0) return <ErrorText error={error} />;
  return (
    <section>
      {gifts.incoming.length > 0 && <h2>{t().gifts_in}</h2>}
      <ul class="list">
        {gifts.incoming.map((g) => (
          <li key={g.id} class="card" data-testid="gift-in">
            <GiftEvent id={g.event_id} />
            <div class="actions">
              <button onClick={() => void act(g.id, 'accept')}>{t().accept}</button>
              <button class="secondary" onClick={() => void act(g.id, 'decline')}>
                {t().decline}
              </button>
            </div>
          </li>
        ))}
      </ul>
      {outgoing.length > 0 && <h2>{t().gifts_out}</h2>}
      <ul class="list">
        {outgoing.map((g) => (
          <li key={g.id} class="card" data-testid="gift-out">
            <GiftEvent id={g.event_id} /> → {g.recipient_email}
            <div class="actions">
              <button class="secondary" onClick={() => void act(g.id, 'cancel')}>
                {t().cancel}
              </button>
            </div>
          </li>
        ))}
      </ul>
      <ErrorText error={error} />
    </section>
  );
}

function GiftEvent({ id }: { id: string }) {
  const ev = useEvent(id);
  return <strong>{ev?.name ?? t().ticket}</strong>;
}

function PurchasePage({ id }: { id: string }) {
  const [p, setP] = useState<Schemas['PurchaseView'] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let stop = false;
    let n = 0;
    const poll = async () => {
      try {
        const v = must(await api.GET('/api/v1/resale-purchases/{id}', { params: { path: { id } } }));
        setP(v);
        if (v.status === 'pending' && !stop && n++ < 120) setTimeout(() => void poll(), 500);
      } catch (e) {
        setError(problemOf(e));
      }
    };
    void poll();
    return () => {
      stop = true;
    };
  }, [id]);
  if (!p) return error ? <ErrorText error={error} /> : <p>{t().loading}</p>;
  return (
    <section data-testid="purchase" data-status={p.status}>
      <h1>
        {t().purchase} · {money(p.price)}
      </h1>
      {p.status === 'completed' ? (
        <>
          <p class="ok">{t().purchase_done}</p>
          <Link class="button big" href="/wallet">
            {t().go_wallet}
          </Link>
        </>
      ) : p.status === 'pending' ? (
        <>
          <p>{t().order_pending}</p>
          {p.last_payment_error && <ErrorText error={problemText(p.last_payment_error)} />}
          {p.checkout_url && (
            <a class="button big" href={p.checkout_url}>
              {t().pay}
            </a>
          )}
        </>
      ) : (
        <p class="error">{problemText(p.status)}</p>
      )}
    </section>
  );
}

// ------------------------------------------------------------------ the ticket's QR

function TicketPage({ id }: { id: string }) {
  const [cred, setCred] = useState<StoredCredential | null>(null);
  const [qr, setQr] = useState<{ text: string; step: number } | null>(null);
  const [error, setError] = useState('');
  const [online, setOnline] = useState(navigator.onLine);
  const [left, setLeft] = useState(15);
  const cached = (JSON.parse(localStorage.getItem(WALLET_CACHE) ?? '[]') as Ticket[]).find((x) => x.id === id);
  const ev = useEvent(cached?.event_id);
  const box = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const up = () => setOnline(true);
    const down = () => setOnline(false);
    addEventListener('online', up);
    addEventListener('offline', down);
    void (async () => {
      try {
        // The ticket's current generation decides whether the stored credential is still the right one.
        let generation: number | null = null;
        if (navigator.onLine) {
          const r = await api.GET('/api/v1/me/tickets', { params: { query: { limit: 100 } } });
          generation = r.data?.items.find((x) => x.id === id)?.generation ?? null;
        }
        setCred(await credentialFor(id, generation));
      } catch (e) {
        setError(e instanceof Error && e.message === 'offline' ? problemText('network') : problemOf(e));
      }
    })();
    // Keep the screen on while the code is shown.
    let lock: WakeLockSentinel | null = null;
    navigator.wakeLock
      ?.request('screen')
      .then((l) => (lock = l))
      .catch(() => undefined);
    return () => {
      removeEventListener('online', up);
      removeEventListener('offline', down);
      void lock?.release();
    };
  }, [id]);

  useEffect(() => {
    if (!cred) return;
    let last = -1;
    let stop = false;
    const tick = async () => {
      setLeft(15 - (Math.floor(Date.now() / 1000) % 15));
      const next = await qrText(cred);
      if (stop || next.step === last) return;
      last = next.step;
      setQr(next);
    };
    void tick();
    const h = setInterval(() => void tick(), 1000);
    return () => {
      stop = true;
      clearInterval(h);
    };
  }, [cred]);

  useEffect(() => {
    if (!qr || !box.current) return;
    const code = qrcode(0, 'M');
    code.addData(qr.text, 'Alphanumeric');
    code.make();
    box.current.innerHTML = code.createSvgTag({ cellSize: 4, margin: 4, scalable: true });
  }, [qr]);

  return (
    <section class="qr-screen">
      <Link href="/wallet">← {t().back}</Link>
      <h1>{ev?.name ?? t().ticket}</h1>
      {cached && (
        <p>
          {t().serial} {cached.serial}
          {ev ? ` · ${when(ev.starts_at, ev.timezone)}` : ''}
        </p>
      )}
      <ErrorText error={error} />
      {!qr && !error && <p>{t().preparing}</p>}
      <div
        ref={box}
        class="qr"
        role="img"
        aria-label="QR"
        data-testid="qr"
        data-qr={qr?.text ?? ''}
        data-step={qr?.step ?? ''}
      />
      {qr && (
        <p aria-live="off">
          <progress max={15} value={left} aria-label={t().qr_next(left)} /> {t().qr_next(left)}
        </p>
      )}
      <p>{t().qr_hint}</p>
      {!online && <p class="pill bad">{t().qr_offline}</p>}
    </section>
  );
}

document.documentElement.lang = getLang();
render(<App />, document.getElementById('app')!);
registerWorker('/sw.js', '/');
