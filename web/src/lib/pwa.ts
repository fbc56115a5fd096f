/** Registers an app's service worker (it caches the app shell so the app opens without a network). */
export function registerWorker(url: string, scope: string): void {
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register(url, { scope }).catch(() => {
      /* not fatal: the app works online without it */
    });
  }
}
