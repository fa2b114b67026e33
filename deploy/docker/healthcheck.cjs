// The images' HEALTHCHECK: GET /healthz on the service's own listener in this container, over
// HTTPS when TLS_CERT_FILE is set (certificate not verified: the peer is this container's own
// process). A listener that requires client certificates (TLS_CLIENT_CA_FILE) refuses it: probe
// such a deployment from outside, with a client certificate.
const http = require(process.env.TLS_CERT_FILE ? 'node:https' : 'node:http');

const bound = process.env.HOST;
const host = bound === undefined || bound === '' || bound === '0.0.0.0' || bound === '::' ? '127.0.0.1' : bound;
const req = http.get({ host, port: Number(process.env.PORT || 8080), path: '/healthz', timeout: 2000, rejectUnauthorized: false }, (res) => {
  res.resume();
  process.exitCode = res.statusCode === 200 ? 0 : 1;
});
req.on('timeout', () => req.destroy(new Error('no answer in time')));
req.on('error', () => {
  process.exitCode = 1;
});
