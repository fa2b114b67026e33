import http from 'node:http';
import type { RequestListener } from 'node:http';
import type { ServerLimits } from '../config/config.js';

/**
 * The API's node:http server with its limits. A client that sends its headers slower than
 * headersTimeoutMs, or its whole request slower than requestTimeoutMs, is answered 408 and
 * disconnected; node checks every connection for that every connectionsCheckingInterval, here a
 * second or a quarter of the headers timeout if shorter.
 */
export function createServer(listener: RequestListener, limits: ServerLimits): http.Server {
  const server = http.createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      maxHeaderSize: limits.maxHeaderBytes,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    listener,
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket;
  return server;
}
