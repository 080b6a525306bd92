// The signed-in screens (Call, Memories, Import, …) and the navigation between them.
//
// The address hash names the screen (`#/memories`), so Back/Forward and bookmarks work and the page needs no
// server routes. A screen is one `register` call plus one link in the `<nav>`; leaving a screen only hides
// it, so a call in progress goes on while the user reads their memories.

const PREFIX = "#/";

/** Which screen shows, the nav's `aria-current`, the document title, and where focus goes on a switch. */
export class Views {
  /**
   * @param {HTMLElement} nav the `<nav>` whose links are `<a href="#/NAME">`.
   * @param {string} fallback the screen for an empty or unknown hash.
   */
  constructor(nav, fallback) {
    this.nav = nav;
    this.fallback = fallback;
    this.views = new Map();
    this.current = null;
    this.active = false;
    this.baseTitle = document.title;
    window.addEventListener("hashchange", () => this.route({ focus: true }));
  }

  /**
   * Adds a screen. ``element`` is shown only while it is current; ``focus()`` returns the element that gets
   * focus when the screen opens (its heading, or its main action); ``onShow()`` runs each time it opens.
   */
  register(name, { element, title, focus, onShow = () => {} }) {
    this.views.set(name, { element, title, focus, onShow });
    element.hidden = true;
  }

  /** Signed in: the nav appears and the screen the hash names opens (focus on its main action). */
  start() {
    this.active = true;
    this.nav.hidden = false;
    this.route({ focus: true });
  }

  /** Signed out: no screen and no nav (the sign-in form is all there is). */
  stop() {
    this.active = false;
    this.nav.hidden = true;
    for (const view of this.views.values()) view.element.hidden = true;
    this.current = null;
    document.title = this.baseTitle;
  }

  /** Opens screen ``name`` (through the hash, so it lands in the history). */
  go(name) {
    if (location.hash === PREFIX + name) this.show(name, { focus: true });
    else location.hash = PREFIX + name;
  }

  route({ focus }) {
    if (!this.active) return;
    const hash = location.hash;
    // Other fragments (the skip link's #main) are not screens: stay where we are.
    if (hash && !hash.startsWith(PREFIX) && this.current) return;
    const name = hash.slice(PREFIX.length);
    this.show(this.views.has(name) ? name : this.fallback, { focus });
  }

  show(name, { focus }) {
    const view = this.views.get(name);
    for (const [other, { element }] of this.views) element.hidden = other !== name;
    for (const link of this.nav.querySelectorAll("a")) {
      if (link.getAttribute("href") === PREFIX + name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    this.current = name;
    document.body.dataset.view = name;
    document.title = `${view.title} · ${this.baseTitle}`;
    view.onShow();
    if (focus) view.focus()?.focus();
  }
}
