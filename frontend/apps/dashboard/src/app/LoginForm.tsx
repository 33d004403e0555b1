import { useState, type FormEvent } from 'react';
import { mintToken, ROLES, type Session } from './auth';

const ROLE_HELP: Record<string, string> = {
  admin: 'everything, and may publish',
  analyst: 'tests, system alerts and status',
  viewer: 'tests and maintenance notices',
};

export function LoginForm({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent<HTMLFormElement>) {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const sub = String(form.get('sub') ?? '').trim();
    const role = String(form.get('role') ?? 'analyst');
    const groups = String(form.get('groups') ?? '')
      .split(',')
      .map((g) => g.trim())
      .filter(Boolean);
    if (!sub) {
      setError('Enter a user id.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await mintToken(sub, [role], groups));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <form className="panel login__card" data-testid="demo-login" onSubmit={(e) => void submit(e)}>
        <div className="brand brand--big">
          <span className="brand__mark" aria-hidden="true">◆</span> secstream
        </div>
        <p className="login__lead">Real-time security testing dashboard · demo sign-in</p>
        <label className="field">
          <span>User id</span>
          <input name="sub" defaultValue="u-demo" autoComplete="username" required maxLength={64} />
        </label>
        <label className="field">
          <span>Role</span>
          <select name="role" defaultValue="admin">
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r} — {ROLE_HELP[r]}
              </option>
            ))}
          </select>
        </label>
        <label className="field">
          <span>Groups (optional, comma separated)</span>
          <input name="groups" placeholder="red-team, soc" />
        </label>
        {error && (
          <p className="login__error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="btn btn--primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="login__note">Demo tokens are minted by the server started with --demo.</p>
      </form>
    </main>
  );
}
