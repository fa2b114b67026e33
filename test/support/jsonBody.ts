/** Reading a test client's HTTP response body: its text, and its JSON (undefined when it is not JSON). */
import type { IncomingMessage } from 'node:http';

/** Collects the body of `res` and calls `done` with its text and parsed JSON once it ends. */
export function onJsonBody(res: IncomingMessage, done: (text: string, body: unknown) => void): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    done(text, body);
  });
}
