// Run by `npm run build` after tsc: copies what tsc does not compile, the status page's files
// (src/service/status-page/), to dist/service/status-page/, where the admin endpoint looks for
// them beside its module (src/service/static-files.ts). A tree without the folder copies nothing.
import { cpSync, existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const from = join(root, 'src/service/status-page');
const to = join(root, 'dist/service/status-page');
rmSync(to, { recursive: true, force: true });
if (existsSync(from)) cpSync(from, to, { recursive: true });
