import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
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
  server.on('clientError', answerClientError);
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket;
  if (tls) {
    // A connection keeps the certificate it was authenticated with (auth caches its identity per socket).
    server.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation());
  }
  return server;
}

/** What Node's HTTP parser refuses before any request exists, as the contract's error (by the parser's code). */
function parserError(code: string | undefined): { code: ErrorCode; message: string } {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { code: 'REQUEST_TIMEOUT', message: 'request: not received within the time allowed' };
  if (code === 'HPE_HEADER_OVERFLOW') return { code: 'HEADERS_TOO_LARGE', message: 'headers: the request line and headers are over the size allowed' };
  return { code: 'INVALID_ARGUMENT', message: 'request: not valid HTTP/1.1 (request line, header or framing)' };
}

/**
 * Node's own answers to what its parser refuses (400, 408, 431) are bare text without an
 * X-Request-Id; these are the contract's JSON error instead, then the connection is closed. The
 * parser's message is not echoed (it can quote the request's bytes).
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A connection reset or already answered has nobody to tell.
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const { code, message } = parserError(err.code);
  const requestId = randomUUID();
  const body = JSON.stringify({ error: { code, message, requestId } });
  const status = ERROR_CODES[code].status;
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
  );
}
