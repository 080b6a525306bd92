// Service worker: keeps the app shell so the page opens offline (and installs as an app), and opens the page
// when the user clicks one of the avatar's messages shown as a system notification (inbox.js shows them, only
// with the user's permission).
//
// Network first for the shell, so a running server always serves its current page; the cache answers only
// when the network does not. Nothing else is touched: API calls (/v1/…, the event stream included), WebRTC
// signalling, /healthz and /metrics always go to the network and are never stored.
const CACHE = "soma-shell-v5"; // a new name when the list changes: activate drops the old cache
const SHELL = [
  "/",
  "/index.html",
  "/style.css",
  "/app.js",
  "/api.js",
  "/bond.js",
  "/call.js",
  "/callview.js",
  "/dom.js",
  "/imports.js",
  "/inbox.js",
  "/memories.js",
  "/meter.js",
  "/persona.js",
  "/reachout.js",
  "/sse.js",
  "/turns.js",
  "/views.js",
  "/voice.js",
  "/voice-capture.js",
  "/voice-record.js",
  "/train.js",
  "/train-view.js",
  "/manifest.webmanifest",
  "/icons/icon.svg",
  "/icons/icon-192.png",
  "/icons/icon-512.png",
  "/icons/icon-maskable-512.png",
];
const SHELL_PATHS = new Set(SHELL);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  const isPage = request.mode === "navigate" && !url.pathname.startsWith("/v1/") && !url.pathname.startsWith("/docs");
  if (!SHELL_PATHS.has(url.pathname) && !isPage) return; // the network only, never cached
  event.respondWith(networkFirst(request, isPage ? "/" : url.pathname));
});

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && SHELL_PATHS.has(key)) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}

// A click on one of the avatar's messages: back to an open Soma page (the inbox is on its Call screen), or a
// new one.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL(event.notification.data?.url || "/", self.location.origin);
  if (target.origin !== self.location.origin) return; // only ever this server's own page
  event.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const page = open.find((client) => new URL(client.url).origin === self.location.origin);
    if (page) {
      await page.focus();
      return;
    }
    await self.clients.openWindow(target.href);
  })());
});
