import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/**
 * Whether the module at `moduleUrl` (its `import.meta.url`) is the script node was started with
 * (the admin CLI, the harness's scripts).
 * Node runs the script from its real path, so a path through a symlink (a checkout reached through
 * a linked directory) must be resolved before comparing, or the script would not know it is main.
 */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return moduleUrl === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}
