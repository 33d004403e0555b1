// @vitest-environment jsdom
import { User, UserManager } from 'oidc-client-ts';
import { describe, expect, it } from 'vitest';
import { userManagerSettings } from './oidc';

const CONFIG = { issuer: 'https://idp.example.test/realms/sec', client_id: 'secstream-dashboard', scope: 'openid profile' };

describe('token storage', () => {
  it('keeps the signed-in user in memory only: nothing in localStorage or sessionStorage', async () => {
    localStorage.clear();
    sessionStorage.clear();
    const settings = userManagerSettings(CONFIG, 'http://127.0.0.1:8000');
    expect(settings).toMatchObject({
      redirect_uri: 'http://127.0.0.1:8000/',
      post_logout_redirect_uri: 'http://127.0.0.1:8000/',
      response_type: 'code',
      automaticSilentRenew: false,
    });
    expect(settings).not.toHaveProperty('client_secret');
    const manager = new UserManager(settings);
    const now = Date.now() / 1000;
    const user = new User({
      access_token: 'secret-access-token',
      refresh_token: 'secret-refresh-token',
      id_token: 'secret-id-token',
      token_type: 'Bearer',
      profile: { sub: 'alice', iss: CONFIG.issuer, aud: CONFIG.client_id, exp: now + 60, iat: now },
      expires_at: now + 60,
    });
    await manager.storeUser(user);
    expect((await manager.getUser())?.access_token).toBe('secret-access-token');
    expect(localStorage.length).toBe(0);
    expect(sessionStorage.length).toBe(0);
    // a second manager (a reload of the page) finds nothing
    expect(await new UserManager(userManagerSettings(CONFIG, 'http://127.0.0.1:8000')).getUser()).toBeNull();
    await manager.removeUser();
    expect(await manager.getUser()).toBeNull();
  });
});
