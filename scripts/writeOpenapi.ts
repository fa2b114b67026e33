/** `npm run openapi`: writes the served OpenAPI document to docs/openapi.json (checked in; a test fails when it is stale). */
import { writeFileSync } from 'node:fs';
import { OPENAPI_DOCUMENT } from '../src/http/openapi.js';

const file = new URL('../docs/openapi.json', import.meta.url);
writeFileSync(file, `${JSON.stringify(OPENAPI_DOCUMENT, null, 2)}\n`);
console.log(`wrote ${file.pathname}`);
