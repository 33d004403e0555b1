import { useState, type FormEvent } from 'react';
import { errorMessage, postJson, type GetToken } from './api.js';

type Result = { ok: boolean; text: string } | null;

/** `datetime-local` input value (local time) as an ISO instant, or null when empty or unreadable. */
export function toIso(local: string): string | null {
  if (!local) return null;
  const t = Date.parse(local);
  return Number.isFinite(t) ? new Date(t).toISOString() : null;
}

/** The publish body of a maintenance announcement, or the reason it cannot be sent. */
export function maintenanceEvent(f: { title: string; message: string; startsAt: string; endsAt: string }): Record<string, unknown> | string {
  const startsAt = toIso(f.startsAt);
  const endsAt = toIso(f.endsAt);
  if (!f.title.trim()) return 'Give the announcement a title.';
  if (!startsAt || !endsAt) return 'Give the window a start and an end.';
  if (Date.parse(endsAt) <= Date.parse(startsAt)) return 'The window must end after it starts.';
  return {
    event_type: 'system.maintenance',
    priority: 'high',
    data: { title: f.title.trim(), ...(f.message.trim() ? { message: f.message.trim() } : {}), starts_at: startsAt, ends_at: endsAt },
  };
}

/** The publish body of a notification to one user, or the reason it cannot be sent. */
export function notificationEvent(f: { user: string; title: string; message: string }): Record<string, unknown> | string {
  if (!f.user.trim()) return 'Name the user to notify.';
  if (!f.title.trim()) return 'Give the notification a title.';
  return {
    event_type: 'user.notification',
    audience: { users: [f.user.trim()] },
    data: { title: f.title.trim(), ...(f.message.trim() ? { message: f.message.trim() } : {}) },
  };
}

function Outcome({ result }: { result: Result }) {
  if (!result) return null;
  return (
    <p className={`admin__result ${result.ok ? 'admin__result--ok' : 'admin__result--bad'}`} role="status" data-testid="admin-result">
      {result.text}
    </p>
  );
}

function useSender(getToken: GetToken) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Result>(null);
  async function send(body: Record<string, unknown> | string, done: string): Promise<boolean> {
    if (typeof body === 'string') {
      setResult({ ok: false, text: body });
      return false;
    }
    setBusy(true);
    try {
      const reply = (await postJson(getToken, '/api/v1/events', body)) as { id?: string } | null;
      setResult({ ok: true, text: `${done} (event ${reply?.id ?? '?'}).` });
      return true;
    } catch (err) {
      setResult({ ok: false, text: `Not sent: ${errorMessage(err)}` });
      return false;
    } finally {
      setBusy(false);
    }
  }
  return { busy, result, send };
}

function MaintenanceForm({ getToken }: { getToken: GetToken }) {
  const [f, setF] = useState({ title: 'Scheduled maintenance', message: '', startsAt: '', endsAt: '' });
  const { busy, result, send } = useSender(getToken);
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  function submit(e: FormEvent) {
    e.preventDefault();
    void send(maintenanceEvent(f), 'Maintenance announced');
  }
  return (
    <form className="admin__form" data-testid="maintenance-form" onSubmit={submit}>
      <h3>Announce maintenance</h3>
      <label className="field">
        Title
        <input name="title" value={f.title} onChange={set('title')} maxLength={200} required />
      </label>
      <label className="field">
        Message
        <input name="message" value={f.message} onChange={set('message')} maxLength={1000} placeholder="What happens meanwhile" />
      </label>
      <div className="admin__row">
        <label className="field">
          Starts
          <input type="datetime-local" name="starts_at" value={f.startsAt} onChange={set('startsAt')} required />
        </label>
        <label className="field">
          Ends
          <input type="datetime-local" name="ends_at" value={f.endsAt} onChange={set('endsAt')} required />
        </label>
      </div>
      <button type="submit" className="btn btn--small" disabled={busy}>
        {busy ? 'Sending…' : 'Announce'}
      </button>
      <Outcome result={result} />
    </form>
  );
}

function NotifyForm({ getToken }: { getToken: GetToken }) {
  const [f, setF] = useState({ user: '', title: '', message: '' });
  const { busy, result, send } = useSender(getToken);
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (await send(notificationEvent(f), `Sent to ${f.user.trim()}`)) setF({ ...f, title: '', message: '' });
  }
  return (
    <form className="admin__form" data-testid="notify-form" onSubmit={(e) => void submit(e)}>
      <h3>Notify a user</h3>
      <label className="field">
        User (sub)
        <input name="user" value={f.user} onChange={set('user')} maxLength={256} required />
      </label>
      <label className="field">
        Title
        <input name="title" value={f.title} onChange={set('title')} maxLength={200} required />
      </label>
      <label className="field">
        Message
        <input name="message" value={f.message} onChange={set('message')} maxLength={1000} />
      </label>
      <button type="submit" className="btn btn--small" disabled={busy}>
        {busy ? 'Sending…' : 'Send'}
      </button>
      <Outcome result={result} />
    </form>
  );
}

/** Operator actions for administrators: announce maintenance, notify one user. */
export function AdminPanel({ getToken }: { getToken: GetToken }) {
  return (
    <section className="panel admin" data-testid="admin-panel">
      <header className="widget__head">
        <h2>Administration</h2>
      </header>
      <div className="admin__forms">
        <MaintenanceForm getToken={getToken} />
        <NotifyForm getToken={getToken} />
      </div>
    </section>
  );
}
