// Sign-in / sign-up, the signed-in screens and the navigation between them (views.js), and the Settings area
// (API tokens, sign-out). The screens live in their own modules: the call in callview.js / call.js, the
// avatar's messages in inbox.js, memories in memories.js, imports in imports.js, the persona and the bond in
// persona.js and bond.js, when the avatar reaches out in reachout.js, the avatar's voice in voice.js, training
// the avatar's own model in train.js.
import { ApiError, api, auth } from "./api.js";
import { setUpBond } from "./bond.js";
import { setUpCallScreen } from "./callview.js";
import { setUpImports } from "./imports.js";
import { setUpInbox } from "./inbox.js";
import { setUpMemories } from "./memories.js";
import { setUpPersona } from "./persona.js";
import { setUpReachingOut } from "./reachout.js";
import { setUpTraining } from "./train.js";
import { Views } from "./views.js";
import { setUpVoice } from "./voice.js";

const $ = (id) => document.getElementById(id);
let signupOpen = false;
let signupMode = false;
let callScreen = null;
const memories = setUpMemories();
const imports = setUpImports();
const inbox = setUpInbox();
const persona = setUpPersona();
const bond = setUpBond();
const reachingOut = setUpReachingOut();
const voice = setUpVoice();
const training = setUpTraining();
const views = new Views($("nav"), "call");
views.register("call", {
  element: $("home"),
  title: "Call",
  focus: () => ($("call-button").hidden ? $("hangup-button") : $("call-button")),
});
views.register("memories", { element: $("memories-view"), title: "Memories", focus: () => $("memories-title"),
  onShow: () => memories.show() });
views.register("import", { element: $("import-view"), title: "Import", focus: () => $("import-title"),
  onShow: () => imports.show() });
views.register("persona", { element: $("persona-view"), title: "Persona", focus: () => $("persona-title"),
  onShow: () => { persona.show(); bond.show(); } });
views.register("reaching-out", { element: $("reach-view"), title: "Reaching out", focus: () => $("reach-title"),
  onShow: () => reachingOut.show() });
views.register("voice", { element: $("voice-view"), title: "Voice", focus: () => $("voice-title"),
  onShow: () => voice.show() });
views.register("train", { element: $("train-view"), title: "Train", focus: () => $("train-title"),
  onShow: () => training.show() });

function showAuthMode() {
  $("auth-title").textContent = signupMode ? "Create your account" : "Sign in";
  $("auth-submit").textContent = signupMode ? "Create account" : "Sign in";
  $("display-name-row").hidden = !signupMode;
  $("password").autocomplete = signupMode ? "new-password" : "current-password";
  $("auth-switch-row").hidden = !signupOpen;
  $("auth-switch").textContent = signupMode ? "I already have an account" : "Create an account";
}

async function showAuth() {
  const status = await api("/v1/auth/signup").catch(() => ({ signup_open: false }));
  signupOpen = signupMode = status.signup_open;
  showAuthMode();
  views.stop();
  $("auth").hidden = false;
  document.body.dataset.view = "auth";
  $("username").focus();
}

async function showHome(me) {
  $("who").textContent = me.display_name || me.username;
  $("auth").hidden = true;
  callScreen ??= setUpCallScreen();
  imports.signIn(me);
  views.start();
  inbox.signIn();
  await listTokens();
}

async function listTokens() {
  const tokens = await api("/v1/auth/tokens");
  $("tokens").replaceChildren(...tokens.filter((t) => !t.revoked_at).map((t) => {
    const li = document.createElement("li");
    li.textContent = `${t.name || "(unnamed)"} — ${t.scopes.join(", ")}` +
      (t.expires_at ? `, expires ${new Date(t.expires_at).toLocaleDateString()}` : "");
    return li;
  }));
}

$("auth-switch").addEventListener("click", () => {
  signupMode = !signupMode;
  $("auth-error").textContent = "";
  showAuthMode();
  $("username").focus();
});

$("auth-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("auth-error").textContent = "";
  const username = $("username").value.trim().toLowerCase();
  const password = $("password").value;
  try {
    if (signupMode) {
      const result = await api("/v1/auth/signup", {
        method: "POST", body: JSON.stringify({ username, password, display_name: $("display-name").value }),
      });
      auth.token = result.token.access_token;
    } else {
      const result = await api("/v1/auth/token", { method: "POST", body: JSON.stringify({ username, password }) });
      auth.token = result.access_token;
    }
    $("password").value = "";
    await showHome(await api("/v1/me"));
  } catch (error) {
    $("auth-error").textContent = error.message;
  }
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const created = await api("/v1/auth/tokens", {
      method: "POST", body: JSON.stringify({ name: $("token-name").value, scopes: ["*"] }),
    });
    $("new-token").textContent = `New token (copy it now, it is shown once): ${created.token}`;
    $("new-token").hidden = false;
    $("token-name").value = "";
    await listTokens();
  } catch (error) {
    $("new-token").textContent = error.message;
    $("new-token").hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  callScreen?.hangUp();
  memories.reset();
  imports.reset();
  inbox.reset(); // before the token is revoked: the stream stops here, not by a refusal
  persona.reset();
  bond.reset();
  reachingOut.reset();
  voice.reset();
  training.reset();
  await api("/v1/auth/logout", { method: "POST" }).catch(() => {});
  auth.token = null;
  history.replaceState(null, "", location.pathname); // the next account starts on the call screen
  $("new-token").hidden = true;
  $("settings").open = false;
  await showAuth();
});

/** First screen: the call screen with a valid token, else sign-in; offline, the shell says so and waits. */
async function start() {
  if (!auth.token) return showAuth();
  let me;
  try {
    me = await api("/v1/me");
  } catch (error) {
    if (error instanceof ApiError) {
      auth.token = null; // expired or revoked
      return showAuth();
    }
    // No answer at all: offline (the shell came from the service worker) or the server is down.
    await showHome({ username: "" }).catch(() => {});
    $("call-error").textContent = "You are offline. Calls need a connection to your Soma server.";
    window.addEventListener("online", () => location.reload(), { once: true });
    return undefined;
  }
  return showHome(me);
}

start();

// The app shell works offline once loaded (sw.js); the API never goes through the cache.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}
