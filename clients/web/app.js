// Sign-in / first-run sign-up and API-token management. The token lives in sessionStorage only.
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("soma-token");
let signupMode = false;

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

async function showAuth() {
  const { signup_open } = await api("/v1/auth/signup");
  signupMode = signup_open;
  $("auth-title").textContent = signupMode ? "Create your account" : "Sign in";
  $("auth-submit").textContent = signupMode ? "Create account" : "Sign in";
  $("display-name-row").hidden = !signupMode;
  $("password").autocomplete = signupMode ? "new-password" : "current-password";
  $("home").hidden = true;
  $("auth").hidden = false;
  $("username").focus();
}

async function showHome() {
  const me = await api("/v1/me");
  $("who").textContent = me.display_name || me.username;
  $("auth").hidden = true;
  $("home").hidden = false;
  await listTokens();
}

async function listTokens() {
  const tokens = await api("/v1/auth/tokens");
  const list = $("tokens");
  list.replaceChildren(...tokens.filter((t) => !t.revoked_at).map((t) => {
    const li = document.createElement("li");
    li.textContent = `${t.name || "(unnamed)"} — ${t.scopes.join(", ")}` +
      (t.expires_at ? `, expires ${new Date(t.expires_at).toLocaleDateString()}` : "");
    return li;
  }));
}

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
      token = result.token.access_token;
    } else {
      token = (await api("/v1/auth/token", { method: "POST", body: JSON.stringify({ username, password }) }))
        .access_token;
    }
    sessionStorage.setItem("soma-token", token);
    $("password").value = "";
    await showHome();
  } catch (error) {
    $("auth-error").textContent = error.message;
  }
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const created = await api("/v1/auth/tokens", {
    method: "POST", body: JSON.stringify({ name: $("token-name").value, scopes: ["*"] }),
  });
  $("new-token").textContent = `New token (copy it now, it is shown once): ${created.token}`;
  $("new-token").hidden = false;
  await listTokens();
});

$("logout").addEventListener("click", async () => {
  await api("/v1/auth/logout", { method: "POST" }).catch(() => {});
  token = null;
  sessionStorage.removeItem("soma-token");
  $("new-token").hidden = true;
  await showAuth();
});

(token ? showHome() : showAuth()).catch(() => { token = null; sessionStorage.removeItem("soma-token"); showAuth(); });
