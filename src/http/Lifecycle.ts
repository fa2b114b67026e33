import type { Server, ServerResponse } from 'node:http';
import net from 'node:net';

/** How often, once the listener is closed, the connections idle since the last look are closed. */
const IDLE_SWEEP_MS = 1000;

/**
 * A worker's drain after SIGTERM/SIGINT. startDraining(): /readyz answers 503 (a load balancer
 * takes the instance out) and the listener still serves as before. closeListener(): no new
 * connections. closeConnections(): each connection closes after its next answer, or now if idle.
 * A connection is closed after an answer, never while a request it carries is unanswered.
 */
export class Lifecycle {
  private drainingNow = false;
  private closing = false;
  private server: Server | undefined;
  /** Answers not yet sent, to make them close their connection when the listener closes. */
  private readonly answering = new Set<ServerResponse>();

  get draining(): boolean {
    return this.drainingNow;
  }

  /** The server this drain closes; before it listens. */
  serve(server: Server): void {
    this.server = server;
    // First among the 'request' listeners: the app may answer synchronously (/healthz).
    server.prependListener('request', (_req, res: ServerResponse) => {
      if (this.closing) {
        res.setHeader('Connection', 'close');
        return;
      }
      this.answering.add(res);
      res.once('close', () => this.answering.delete(res));
    });
  }

  startDraining(): void {
    this.drainingNow = true;
  }

  /**
   * Closes the listener; resolves once every connection has ended, which takes closeConnections().
   * In a cluster, the primary's listening socket closes once every worker has closed its listener.
   */
  closeListener(): Promise<void> {
    this.drainingNow = true;
    const server = this.server;
    if (!server?.listening) return Promise.resolve();
    // Not server.close(): node's http close also destroys every connection with no request being
    // parsed, which includes one whose next request already sits unread in its socket buffer (a
    // busy worker): that request would be reset. closeConnections() closes them after an answer.
    return new Promise((resolve) => net.Server.prototype.close.call(server, () => resolve()));
  }

  /**
   * Every answer from now on (those being prepared included) says `Connection: close`, and the
   * connections left idle are closed (a second later, and every second after). Called once no
   * listener accepts: a client that reconnects is then refused, rather than queued on a socket
   * about to close.
   */
  closeConnections(): void {
    const server = this.server;
    if (this.closing || !server) return;
    this.closing = true;
    for (const res of this.answering) if (!res.headersSent) res.setHeader('Connection', 'close');
    this.answering.clear();
    // A connection whose next request is already unread in its buffer is "idle" to node for a
    // moment: the first sweep comes after a delay, when such a request has been read.
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    server.once('close', () => clearInterval(sweep));
  }
}
