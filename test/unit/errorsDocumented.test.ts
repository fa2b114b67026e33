import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ERROR_CODES } from '../../src/errors.js';
import { OPENAPI_DOCUMENT } from '../../src/http/openapi.js';

test('every error code is documented in the README with its status', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    assert.match(readme, new RegExp(`\\| ${status} \\| \`${code}\` \\|`), code);
  }
});

test('every error code is in the OpenAPI document, answered with its status by at least one operation', () => {
  type Doc = {
    paths: Record<string, Record<string, { responses: Record<string, { $ref?: string }> }>>;
    components: {
      responses: Record<string, { content: { 'application/json': { schema: { properties: { error: { properties: { code: { enum: string[] } } } } } } } }>;
    };
  };
  const doc = OPENAPI_DOCUMENT as unknown as Doc;
  const answered = new Set<string>();
  for (const methods of Object.values(doc.paths))
    for (const { responses } of Object.values(methods))
      for (const [status, r] of Object.entries(responses)) {
        const shared = r.$ref ? doc.components.responses[r.$ref.replace('#/components/responses/', '')] : undefined;
        for (const code of shared?.content['application/json'].schema.properties.error.properties.code.enum ?? []) answered.add(`${status} ${code}`);
      }
  for (const [code, { status }] of Object.entries(ERROR_CODES)) assert.ok(answered.has(`${status} ${code}`), code);
});
