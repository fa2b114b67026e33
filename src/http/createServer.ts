import http from 'node:http';
import https from 'node:https';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { RequestListener } from 'node:http';
import type { ServerLimits } from '../config/config.js';
import type { TlsMaterial } from '../config/tlsFiles.js';

export type ApiServer = http.Server | https.Server;

/** The secure-context part of the server's TLS options; also what SIGHUP hands to setSecureContext. */
export function secureContextOptions(m: TlsMaterial): SecureContextOptions {
  // The CA goes into every new context too: without it a reloaded context would verify client
  // certificates against Node's default root store.
  return { cert: m.cert, key: m.key, minVersion: 'TLSv1.2', ...(m.ca ? { ca: m.ca } : {}) };
}

/**
 * The API's node:http or node:https server with its limits. A client that sends its headers (or
 * its TLS handshake) slower than headersTimeoutMs, or its whole request slower than
 * requestTimeoutMs, is answered 408 and disconnected; node checks every connection for that every
 * connectionsCheckingInterval, here a second or a quarter of the headers timeout if shorter.
 */
export function createServer(listener: RequestListener, limits: ServerLimits, tls?: TlsMaterial): ApiServer {
  const httpOptions: http.ServerOptions = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    maxHeaderSize: limits.maxHeaderBytes,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
  const server: ApiServer = tls
    ? https.createServer(
        {
          ...httpOptions,
          ...secureContextOptions(tls),
          handshakeTimeout: limits.headersTimeoutMs,
          // With a client CA, a certificate it issued is required: anything else fails the handshake.
          ...(tls.ca ? { requestCert: true, rejectUnauthorized: true } : {}),
        },
        listener,
      )
    : http.createServer(httpOptions, listener);
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket;
  if (tls) {
    // A connection keeps the certificate it was authenticated with (auth caches its identity per socket).
    server.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation());
  }
  return server;
}
