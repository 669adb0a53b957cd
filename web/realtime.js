// The page's realtime connection: Echo's client library (clients/js, served as
// /app/echo-client.js) on this page's own server, with unsent messages kept in localStorage
// per user so that they survive a reload. Reconnection, token refresh, resubscribing with
// `since_seq`, the `client_msg_id` outbox and AI reply assembly all live in the library.

import { EchoClient, localStorageOutbox } from './echo-client.js';

export class Realtime extends EchoClient {
  /**
   * @param {() => string|null} token the current access token
   * @param {{userId?: string}} [options] the signed-in user, whose outbox is restored
   */
  constructor(token, { userId } = {}) {
    super({
      url: location.origin,
      getToken: token,
      outbox: userId ? localStorageOutbox(`echo.outbox.v1.${userId}`) : undefined,
    });
  }
}
