import { fileURLToPath } from 'node:url';

/** The repository's root, where child processes run so that their relative paths (src/main.ts, .hsm/) resolve. */
export const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
