// The dashboard's shell: sign-in, navigation between views (#/name), the live indicator, and the session.
import { Api } from "./api.js";
import { Live } from "./live.js";
import { clear, toast } from "./dom.js";
import { views } from "./views.js";

const api = new Api();
const live = new Live(api);
const main = document.getElementById("view");
const signInForm = document.getElementById("sign-in");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("sign-out");
const liveLabel = document.getElementById("live");
const me = document.getElementById("me");
let cleanup = null;

live.onState = (state) => {
  liveLabel.dataset.state = state;
  liveLabel.textContent = { on: "Live", connecting: "Reconnecting…", off: "Offline" }[state];
};

api.onSignedOut = () => {
  live.stop();
  showSignIn("Your session ended; sign in again.");
};

function showSignIn(message = "") {
  if (cleanup) { cleanup(); cleanup = null; }
  nav.hidden = true;
  signOutButton.hidden = true;
  me.textContent = "";
  clear(main, signInForm);
  signInForm.hidden = false;
  document.getElementById("sign-in-error").textContent = message;
  signInForm.querySelector("input[name=email]").focus();
}

signInForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(signInForm);
  const button = signInForm.querySelector("button");
  button.disabled = true;
  try {
    await api.signIn(String(data.get("email")), String(data.get("password")));
    signInForm.reset();
    signedIn();
  } catch (error) {
    document.getElementById("sign-in-error").textContent =
      error.status === 401 ? "Wrong email or password." : error.message;
  } finally {
    button.disabled = false;
  }
});

signOutButton.addEventListener("click", () => api.signOut());

function signedIn() {
  signInForm.hidden = true;
  nav.hidden = false;
  signOutButton.hidden = false;
  me.textContent = `${api.user.email} (${api.user.role})`;
  for (const link of nav.querySelectorAll("[data-admin]")) link.hidden = !api.isAdmin;
  live.start();
  route();
}

function route() {
  if (!api.signedIn) return;
  const [name, ...rest] = (window.location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const view = views[name] && (!views[name].admin || api.isAdmin) ? name : "overview";
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#/${view}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cleanup) cleanup();
  clear(main);
  document.title = `${views[view].title} · TechHub`;
  cleanup = views[view].render({ api, live, root: main, param: rest.join("/") || null, toast });
  main.focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  const error = event.reason;
  if (error && error.status) {
    event.preventDefault();
    toast(error.message);
  }
});
showSignIn();
