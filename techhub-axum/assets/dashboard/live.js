// The live feed: one WebSocket to /api/v1/events, authenticated by its first message (the token never goes in
// the URL). It reconnects with backoff when dropped, and tells listeners "reconnected" so that each view
// catches up by reading the current state again.

export class Live {
  #api;
  #socket = null;
  #listeners = new Set();
  #retry = 0;
  #timer = null;
  #stopped = true;
  #followLogs = false;
  state = "off";
  onState = () => {};

  constructor(api) { this.#api = api; }

  /** Adds a listener of every message ({ type, topic, data } events, "log" records, "reconnected"). */
  listen(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start() {
    this.#stopped = false;
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#socket?.close(1000, "signed out");
    this.#socket = null;
    this.#setState("off");
  }

  /** Admins: receive the server's new log records. */
  followLogs(follow) {
    this.#followLogs = follow;
    this.#sendLogs();
  }

  #sendLogs() {
    if (this.#socket?.readyState === WebSocket.OPEN && this.#api.isAdmin) {
      this.#socket.send(JSON.stringify({ type: "logs", follow: this.#followLogs }));
    }
  }

  #setState(state) {
    this.state = state;
    this.onState(state);
  }

  #emit(message) {
    for (const listener of this.#listeners) {
      try { listener(message); } catch (error) { console.warn("a live listener failed", error); }
    }
  }

  #connect() {
    if (this.#stopped || !this.#api.signedIn) return;
    this.#setState("connecting");
    const url = new URL("/api/v1/events", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    this.#socket = socket;
    let authenticated = false;
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", token: this.#api.token })));
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.type === "authenticated") {
        authenticated = true;
        const again = this.#retry > 0 || this.wasConnected;
        this.#retry = 0;
        this.wasConnected = true;
        this.#setState("on");
        this.#sendLogs();
        if (again) this.#emit({ type: "reconnected" });
        return;
      }
      this.#emit(data);
    });
    socket.addEventListener("close", () => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      if (this.#stopped) return;
      this.#setState("connecting");
      // A socket closed before it was in, or by an expired token: refresh first.
      const before = authenticated ? Promise.resolve() : this.#api.refresh().catch(() => {});
      const delay = Math.min(10000, 250 * 2 ** this.#retry++);
      before.then(() => { this.#timer = setTimeout(() => this.#connect(), delay); });
    });
  }
}
