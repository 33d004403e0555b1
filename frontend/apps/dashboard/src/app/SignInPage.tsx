import type { ReactNode } from 'react';

/** The card every sign-in screen sits in (the demo's form has its own). */
export function SignInCard({ lead, children }: { lead: string; children: ReactNode }) {
  return (
    <main className="login">
      <div className="panel login__card">
        <div className="brand brand--big">
          <span className="brand__mark" aria-hidden="true">◆</span> secstream
        </div>
        <p className="login__lead">{lead}</p>
        {children}
      </div>
    </main>
  );
}

/** Sign in through the organisation's identity provider. */
export function OidcSignIn({
  issuer,
  message,
  busy,
  onSignIn,
}: {
  issuer: string;
  message: string | null;
  busy: boolean;
  onSignIn: () => void;
}) {
  return (
    <SignInCard lead="Real-time security testing dashboard">
      {message && (
        <p className="login__error" role="alert" data-testid="sign-in-message">
          {message}
        </p>
      )}
      <button type="button" className="btn btn--primary" data-testid="oidc-login" disabled={busy} onClick={onSignIn}>
        {busy ? 'Signing in…' : 'Sign in'}
      </button>
      <p className="login__note">
        with your organisation's account at <span className="login__issuer">{new URL(issuer).host}</span>
      </p>
    </SignInCard>
  );
}
