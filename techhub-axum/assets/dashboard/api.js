// The API client: signs in, keeps the access token in memory only (never in storage or a URL), refreshes it
// with the refresh token before it expires (and once more on a 401), and turns problem+json answers into
// ApiError.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export class Api {
  #access = null;
  #refresh = null;
  #timer = null;
  #refreshing = null;
  user = null;
  /** Called with no argument when the session ends (sign-out, refresh refused). */
  onSignedOut = () => {};
  /** Called with the new access token after each sign-in or refresh. */
  onToken = () => {};

  get signedIn() { return this.#access !== null; }
  get token() { return this.#access; }
  get isAdmin() { return this.user?.role === "admin"; }

  async signIn(email, password) {
    const pair = await this.#send("POST", "/api/v1/auth/login", { email, password }, false);
    this.#accept(pair);
  }

  async signOut() {
    const refresh = this.#refresh;
    this.#forget();
    if (refresh) {
      try { await this.#send("POST", "/api/v1/auth/logout", { refresh_token: refresh }, false); } catch { /* gone already */ }
    }
    this.onSignedOut();
  }

  #accept(pair) {
    this.#access = pair.access_token;
    this.#refresh = pair.refresh_token;
    this.user = pair.user;
    clearTimeout(this.#timer);
    // Refresh a little before expiry, so requests and the socket never carry a dead token.
    const lead = Math.max(5, Math.min(60, pair.expires_in / 5));
    this.#timer = setTimeout(() => this.refresh().catch(() => {}), Math.max(1, pair.expires_in - lead) * 1000);
    this.onToken(this.#access);
  }

  #forget() {
    clearTimeout(this.#timer);
    this.#access = null;
    this.#refresh = null;
    this.user = null;
  }

  /** Exchanges the refresh token for a new pair (one exchange at a time). */
  refresh() {
    if (!this.#refresh) return Promise.reject(new ApiError(401, { detail: "not signed in" }));
    this.#refreshing ??= this.#send("POST", "/api/v1/auth/refresh", { refresh_token: this.#refresh }, false)
      .then((pair) => this.#accept(pair))
      .catch((error) => { this.#forget(); this.onSignedOut(); throw error; })
      .finally(() => { this.#refreshing = null; });
    return this.#refreshing;
  }

  get(path) { return this.request("GET", path); }
  post(path, body) { return this.request("POST", path, body ?? {}); }
  patch(path, body) { return this.request("PATCH", path, body); }
  delete(path) { return this.request("DELETE", path); }

  async request(method, path, body) {
    try {
      return await this.#send(method, path, body, true);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && this.#refresh) {
        await this.refresh();
        return this.#send(method, path, body, true);
      }
      throw error;
    }
  }

  /** A file (an artifact) as a Blob, with its name from content-disposition. */
  async download(path) {
    const response = await fetch(path, { headers: { authorization: `Bearer ${this.#access}` } });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const disposition = response.headers.get("content-disposition") || "";
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] || "download";
    return { blob: await response.blob(), name };
  }

  async #send(method, path, body, authenticated) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (authenticated && this.#access) headers.authorization = `Bearer ${this.#access}`;
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    const payload = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new ApiError(response.status, typeof payload === "object" ? payload : { detail: payload });
    return payload;
  }
}
