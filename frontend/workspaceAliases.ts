import { fileURLToPath } from 'node:url';

const at = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** The workspace packages from their sources (for tests and the dev server), not their dist. */
export const workspaceAliases = [
  { find: /^@secstream\/client$/, replacement: at('./packages/client/src/index.ts') },
  { find: /^@secstream\/react$/, replacement: at('./packages/react/src/index.ts') },
  { find: /^@secstream\/react\/styles\.css$/, replacement: at('./packages/react/src/styles.css') },
];
