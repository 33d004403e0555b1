import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';
import { workspaceAliases } from '../../workspaceAliases.ts';

const backend = process.env['SECSTREAM_BACKEND'] ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  resolve: { alias: workspaceAliases },
  build: {
    outDir: '../../../src/secstream/web',
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      '/ws': { target: backend, ws: true, changeOrigin: true },
      '/api': { target: backend, changeOrigin: true },
      '/health': { target: backend, changeOrigin: true },
    },
  },
});
