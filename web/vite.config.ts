import { defineConfig } from 'vitest/config';
import preact from '@preact/preset-vite';
import { resolve } from 'node:path';

// Two apps, one build: the fan app at / and the scanner app at /scan/. The server embeds dist/.
export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    rollupOptions: {
      input: {
        fan: resolve(import.meta.dirname, 'index.html'),
        scan: resolve(import.meta.dirname, 'scan/index.html'),
      },
    },
  },
  server: { proxy: { '/api': 'http://127.0.0.1:8080', '/sandbox': 'http://127.0.0.1:8080' } },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
