/** Where the app's own server is: the socket beside the page that served it. */
export function wsUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === 'https:' ? 'wss' : 'ws'}://${host}/ws`;
}

/** The app's origin, which is also the OpenID Connect `redirect_uri` (with `/`). */
export function appOrigin(): string {
  return window.location.origin;
}
