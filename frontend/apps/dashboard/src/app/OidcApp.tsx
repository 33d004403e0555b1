import { useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import { UserManager } from 'oidc-client-ts';
import { EventClient } from '@secstream/client';
import { WebSocketProvider, useWebSocket } from '@secstream/react';
import type { OidcConfig } from './config';
import { Dashboard, type Viewer } from './Dashboard';
import { isSignInCallback, OidcSession, userManagerSettings, type SignedInUser } from './oidc';
import { OidcSignIn, SignInCard } from './SignInPage';
import { appOrigin, wsUrl } from './urls';

/** The dashboard behind an OpenID Connect sign-in (`GET /api/v1/config` names the provider). */
export function OidcApp({ oidc, demo }: { oidc: OidcConfig; demo: boolean }) {
  const [session] = useState(
    () =>
      new OidcSession(new UserManager(userManagerSettings(oidc, appOrigin())), {
        postLogoutRedirectUri: `${appOrigin()}/`,
      }),
  );
  const state = useSyncExternalStore(session.subscribe, () => session.state);
  const [redirecting, setRedirecting] = useState(false);

  useEffect(() => {
    const href = window.location.href;
    if (!isSignInCallback(href)) return;
    // the code is single-use: take it off the address bar (and out of history) at once
    window.history.replaceState(null, '', window.location.pathname);
    void session.completeSignIn(href);
  }, [session]);

  if (state.kind === 'signing-in') {
    return (
      <SignInCard lead="Signing in…">
        <p className="login__note">Completing the sign-in with your identity provider.</p>
      </SignInCard>
    );
  }
  if (state.kind === 'signed-out') {
    return (
      <OidcSignIn
        issuer={oidc.issuer}
        message={state.message}
        busy={redirecting}
        onSignIn={() => {
          setRedirecting(true);
          void session.signIn().finally(() => setRedirecting(false));
        }}
      />
    );
  }
  return <SignedIn session={session} user={state.user} demo={demo} />;
}

/** One connection for as long as this person stays signed in; renewals refresh it in place. */
function SignedIn({ session, user, demo }: { session: OidcSession; user: SignedInUser; demo: boolean }) {
  const [client] = useState(() => new EventClient({ url: wsUrl(), httpUrl: appOrigin(), getToken: session.getToken }));
  useEffect(() => session.attach(client), [session, client]);
  return (
    <WebSocketProvider client={client}>
      <SignedInDashboard session={session} user={user} demo={demo} />
    </WebSocketProvider>
  );
}

function SignedInDashboard({ session, user, demo }: { session: OidcSession; user: SignedInUser; demo: boolean }) {
  const { status } = useWebSocket();
  // The roles are the server's (after SECSTREAM_ROLE_MAP), from its welcome; kept while reconnecting.
  const lastRoles = useRef<string[]>([]);
  if (status.roles.length) lastRoles.current = status.roles;
  const viewer: Viewer = { sub: user.sub, name: user.name, roles: lastRoles.current, groups: [] };
  const getToken = useMemo(() => () => session.accessToken(), [session]);
  return <Dashboard viewer={viewer} demo={demo} getToken={getToken} onSignOut={() => void session.signOut()} />;
}
