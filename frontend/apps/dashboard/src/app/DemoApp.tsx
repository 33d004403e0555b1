import { useCallback, useMemo, useRef, useState } from 'react';
import { WebSocketProvider } from '@secstream/react';
import { clearSession, loadSession, saveSession, tokenProvider, type Session } from './auth';
import { Dashboard } from './Dashboard';
import { LoginForm } from './LoginForm';
import { wsUrl } from './urls';

/** The demo's sign-in (`secstream serve --demo`): tokens from `POST /api/v1/dev/token`. */
export function DemoApp() {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const sessionRef = useRef(session);
  sessionRef.current = session;

  const signIn = useCallback((s: Session) => {
    saveSession(s);
    setSession(s);
  }, []);
  const signOut = useCallback(() => {
    clearSession();
    setSession(null);
  }, []);

  const identity = session ? `${session.sub}|${session.roles.join(',')}` : null;
  const getToken = useMemo(
    () =>
      tokenProvider(
        () => {
          if (!sessionRef.current) throw new Error('Signed out.');
          return sessionRef.current;
        },
        (s) => {
          sessionRef.current = s;
          saveSession(s);
        },
      ),
    // a new identity gets a new provider (and a new connection below)
    [identity],
  );

  if (!session) return <LoginForm onSignedIn={signIn} />;
  return (
    <WebSocketProvider key={identity} options={{ url: wsUrl(), httpUrl: window.location.origin, getToken }}>
      <Dashboard viewer={session} demo getToken={getToken} onSignOut={signOut} />
    </WebSocketProvider>
  );
}
