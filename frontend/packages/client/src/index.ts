/** @secstream/client: the framework-free client of secstream's `/ws` and polling API. */

export * from './client.js';
export * from './protocol.js';
export * from './codes.js';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { durableClientId, type KeyValueStore } from './clientId.js';
export { Poller, pollUrl, type PollOutcome, type PollerOptions } from './poller.js';
export { developmentMode, StatusMachine } from './status.js';
