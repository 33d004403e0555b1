import { useEffect, useState } from 'react';
import { fetchAppConfig, type AppConfig } from './config';
import { DemoApp } from './DemoApp';
import { OidcApp } from './OidcApp';
import { SignInCard } from './SignInPage';
import { appOrigin } from './urls';

type Loading = { kind: 'loading' } | { kind: 'ready'; config: AppConfig } | { kind: 'failed'; message: string };

/** Which sign-in this server offers (`GET /api/v1/config`), then that app. */
export function App() {
  const [loading, setLoading] = useState<Loading>({ kind: 'loading' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let live = true;
    fetchAppConfig(appOrigin()).then(
      (config) => live && setLoading({ kind: 'ready', config }),
      (err: unknown) => live && setLoading({ kind: 'failed', message: err instanceof Error ? err.message : String(err) }),
    );
    return () => {
      live = false;
    };
  }, [attempt]);

  if (loading.kind === 'loading') {
    return (
      <SignInCard lead="Loading…">
        <p className="login__note">Asking the server how to sign in.</p>
      </SignInCard>
    );
  }
  if (loading.kind === 'failed') {
    return (
      <SignInCard lead="Real-time security testing dashboard">
        <p className="login__error" role="alert" data-testid="config-error">
          Could not load the sign-in settings: {loading.message}.
        </p>
        <button
          type="button"
          className="btn"
          onClick={() => {
            setLoading({ kind: 'loading' });
            setAttempt((n) => n + 1);
          }}
        >
          Try again
        </button>
      </SignInCard>
    );
  }
  const { config } = loading;
  if (config.oidc) return <OidcApp oidc={config.oidc} demo={config.demo} />;
  if (config.demo) return <DemoApp />;
  return (
    <SignInCard lead="Real-time security testing dashboard">
      <p className="login__error" role="alert" data-testid="config-error">
        This server offers no sign-in for the dashboard: its operator sets SECSTREAM_OIDC_ISSUER and
        SECSTREAM_OIDC_CLIENT_ID (see docs/authentication.md).
      </p>
    </SignInCard>
  );
}
