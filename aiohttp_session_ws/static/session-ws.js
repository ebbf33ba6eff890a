// @ts-self-types="./session-ws.d.ts"
/**
 * The browser client of aiohttp-session-ws's protocol (docs/protocol.rst).
 *
 * One ES module with no dependencies and no build step: serve it with
 * aiohttp_session_ws.browser.add_browser_client and import it from a page:
 *
 *     import { connect } from "/session-ws/session-ws.js";
 *     const session = await connect("/live", { reconnect: true });
 *
 * It follows the Python client (aiohttp_session_ws.client) with JavaScript
 * names; session-ws.d.ts beside it describes the API for editors.
 */

/** The websocket subprotocol the client offers. */
export const SUBPROTOCOL = "aiohttp-session-ws.v1";

/** The protocol version this client speaks (the hello's ``version``). */
export const PROTOCOL_VERSION = 1;

/** Where a session stands; state listeners hear every change. */
export const SessionState = Object.freeze({
  /** Opening the first connection (before connect() resolves). */
  CONNECTING: "connecting",
  /** A connection is open and its hello arrived: requests go out. */
  CONNECTED: "connected",
  /** The connection dropped; a new one is on its way (reconnect: true). */
  RECONNECTING: "reconnecting",
  /** For good: closed by close(), by the server (1000, 1008), or given up. */
  CLOSED: "closed",
});

/** A request failed: the server answered with an error frame. */
export class ProtocolError extends Error {
  /**
   * @param {string} code one of the protocol's error codes, such as "unknown_op"
   * @param {string} message the server's message, for humans
   */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "ProtocolError";
    /** The stable error code (docs/protocol.rst, "Error codes"). */
    this.code = code;
    /** The server's message alone; it may change between versions. */
    this.serverMessage = message;
  }
}

/** No answer came within requestTimeout; its code is "timeout", like the server's. */
export class RequestTimeoutError extends ProtocolError {
  /** @param {string} message */
  constructor(message) {
    super("timeout", message);
    this.name = "RequestTimeoutError";
  }
}

/** A request could not be answered: the connection dropped, or is not open. */
export class ConnectionLostError extends Error {
  /**
   * @param {string} message
   * @param {number | null} closeCode the websocket close code (1006: dropped)
   */
  constructor(message, closeCode = null) {
    super(message);
    this.name = "ConnectionLostError";
    /** The close code of the connection that ended; null if none did. */
    this.closeCode = closeCode;
  }
}

/** A connection could not be opened, or did not start the protocol. */
export class ConnectError extends Error {
  /**
   * @param {string} message
   * @param {number | null} closeCode the close code, when the socket closed
   * @param {boolean} retryable whether another attempt may succeed
   */
  constructor(message, closeCode = null, retryable = true) {
    super(message);
    this.name = "ConnectError";
    /**
     * The close code, when the socket closed; a browser says 1006 for a
     * refused upgrade (it does not tell the HTTP status).
     */
    this.closeCode = closeCode;
    /** Whether another attempt may succeed (reconnection stops if not). */
    this.retryable = retryable;
  }
}

const DEFAULTS = Object.freeze({
  reconnect: false,
  requestTimeout: 35000,
  reconnectDelay: 200,
  reconnectMaxDelay: 10000,
  maxReconnectAttempts: null,
  onState: undefined,
  onPush: undefined,
});

/** Close codes after which the session ends for good (logout, rate limit). */
const FINAL_CLOSE_CODES = new Set([1000, 1008]);

/** Lets only connect() make a Session. */
const TOKEN = Symbol("session-ws");

/**
 * Open a protocol session with the endpoint at ``url``: resolve it against
 * the page (http: becomes ws:, https: wss:), connect offering the
 * subprotocol, and resolve once the server's hello arrived.
 *
 * The page's cookies ride on the upgrade: the connection belongs to the
 * page's session. The first connection is not retried: connect() rejects
 * with ConnectError.
 *
 * @param {string | URL} url the protocol endpoint, such as "/live"
 * @param {object} [options] see ConnectOptions in session-ws.d.ts
 * @returns {Promise<Session>}
 */
export async function connect(url, options = {}) {
  const session = new Session(TOKEN, resolveUrl(url), checkOptions(options));
  await session[TOKEN]();
  return session;
}

/** One protocol session: a connection, and its successors when reconnecting. */
export class Session {
  #url;
  #options;
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {string} */
  #state = SessionState.CONNECTING;
  #stateListeners = new Set();
  #pushListeners = new Set();
  #missedListeners = new Set();
  /** @type {Map<number, {resolve: Function, reject: Function, timer: any}>} */
  #pending = new Map();
  #nextId = 1;
  #attempt = 0;
  /** @type {any} */
  #timer = null;
  #sessionId = "";
  #connectionId = "";
  /** @type {Readonly<Record<string, any>>} */
  #limits = Object.freeze({});
  #missed = 0;
  /** @type {number | null} */
  #closeCode = null;
  #closeReason = "";

  /** Made by connect(), not directly. */
  constructor(token, url, options) {
    if (token !== TOKEN) {
      throw new TypeError("make a Session with connect(url, options)");
    }
    this.#url = url;
    this.#options = options;
    if (options.onState) this.addStateListener(options.onState);
    if (options.onPush) this.onPush(options.onPush);
  }

  /** Open the first connection; on failure, close the session and throw. */
  async [TOKEN]() {
    try {
      await this.#open();
    } catch (error) {
      this.#setState(SessionState.CLOSED);
      throw error;
    }
    this.#setState(SessionState.CONNECTED);
  }

  /** The endpoint's URL, resolved (ws: or wss:). */
  get url() {
    return this.#url;
  }

  /** The session's public handle (``$SessionId``), from the last hello. */
  get sessionId() {
    return this.#sessionId;
  }

  /** This connection's id (``$ConnectionId``), from the last hello. */
  get connectionId() {
    return this.#connectionId;
  }

  /** The state: one of SessionState's values. */
  get state() {
    return this.#state;
  }

  /** Whether the session is closed for good. */
  get closed() {
    return this.#state === SessionState.CLOSED;
  }

  /** The server's limits, from the last hello (docs/protocol.rst, "Limits"). */
  get limits() {
    return this.#limits;
  }

  /** Pushes the server dropped for this session because it read too slowly. */
  get missed() {
    return this.#missed;
  }

  /** The close code of the last connection that ended; null while none has. */
  get closeCode() {
    return this.#closeCode;
  }

  /** The close reason of the last connection that ended, often empty. */
  get closeReason() {
    return this.#closeReason;
  }

  /**
   * Call ``listener(oldState, newState)`` on each state change.
   * @returns {() => void} removes the listener
   */
  addStateListener(listener) {
    return addListener(this.#stateListeners, listener);
  }

  /**
   * Call ``listener(data)`` for each push, at once.
   * @returns {() => void} removes the listener
   */
  onPush(listener) {
    return addListener(this.#pushListeners, listener);
  }

  /**
   * Call ``listener(n)`` when a frame says the server dropped ``n`` pushes;
   * ``missed`` holds the total.
   * @returns {() => void} removes the listener
   */
  onMissed(listener) {
    return addListener(this.#missedListeners, listener);
  }

  /**
   * The pushes from now on, for ``for await``. It goes on across
   * reconnections and ends once the session is closed for good and what it
   * holds has been read. It holds up to ``maxBuffer`` unread pushes, and
   * drops the oldest past that (counted in its ``dropped``).
   */
  pushes({ maxBuffer = 1000 } = {}) {
    if (!(maxBuffer >= 1)) {
      throw new RangeError(`maxBuffer must be positive, not ${maxBuffer}`);
    }
    const items = [];
    const waiters = [];
    let ended = false;
    let removePush = () => {};
    let removeState = () => {};
    const end = () => {
      if (ended) return;
      ended = true;
      removePush();
      removeState();
      for (const resolve of waiters.splice(0)) {
        resolve({ done: true, value: undefined });
      }
    };
    const iterator = {
      dropped: 0,
      next() {
        if (items.length) {
          return Promise.resolve({ done: false, value: items.shift() });
        }
        if (ended) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => waiters.push(resolve));
      },
      return() {
        items.length = 0;
        end();
        return Promise.resolve({ done: true, value: undefined });
      },
      /** Stop: the iterator ends after what it holds, and takes no more. */
      close() {
        end();
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    if (this.closed) {
      end();
      return iterator;
    }
    removePush = this.onPush((data) => {
      const resolve = waiters.shift();
      if (resolve) {
        resolve({ done: false, value: data });
        return;
      }
      if (items.length >= maxBuffer) {
        items.shift();
        iterator.dropped++;
      }
      items.push(data);
    });
    removeState = this.addStateListener((_, state) => {
      if (state === SessionState.CLOSED) end();
    });
    return iterator;
  }

  /**
   * Send a ``ping`` request: it proves the server still serves this
   * connection, not only that the socket is open.
   * @returns {Promise<number>} the round trip in milliseconds
   */
  async pingServer() {
    const start = now();
    await this.request("ping");
    return now() - start;
  }

  /**
   * The session properties of this session, or (``{sessionId: handle}``) of
   * the session with that public handle: that one the server's authorization
   * policy may refuse (``forbidden``), and a handle of no live session is
   * ``not_found``.
   * @param {{sessionId?: string}} [options]
   */
  async properties({ sessionId } = {}) {
    const data = await this.request(
      "properties",
      sessionId === undefined ? {} : { session: sessionId },
    );
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new ProtocolError("internal", "properties must be an object");
    }
    return data;
  }

  /**
   * Send request ``op`` with ``args``; resolve to the ``data`` of its result.
   *
   * Rejects with ProtocolError (the server's error frame, with its code; or
   * "too_large", not sent, when the frame is over the server's
   * max_frame_size), RequestTimeoutError (no answer within requestTimeout),
   * ConnectionLostError (the connection is not open, or ended before the
   * answer came), or TypeError (args JSON cannot carry).
   */
  request(op, args = {}) {
    try {
      return this.#send(op, args);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #send(op, args) {
    if (typeof op !== "string") {
      throw new TypeError(`op must be a string, not ${typeof op}`);
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw new TypeError("the arguments of a request are an object");
    }
    if (Object.hasOwn(args, "op") || Object.hasOwn(args, "id")) {
      throw new TypeError('"op" and "id" are not arguments of a request');
    }
    const ws = this.#ws;
    if (this.#state !== SessionState.CONNECTED || ws === null) {
      throw new ConnectionLostError(
        `cannot send ${JSON.stringify(op)}: the session is ${this.#state}`,
        this.#closeCode,
      );
    }
    const id = this.#nextId;
    this.#nextId = id >= Number.MAX_SAFE_INTEGER ? 1 : id + 1;
    const text = JSON.stringify({ op, id, ...args });
    const maxSize = this.#limits.max_frame_size;
    if (typeof maxSize === "number" && utf8Length(text, maxSize) > maxSize) {
      throw new ProtocolError(
        "too_large",
        `request ${JSON.stringify(op)} is over the server's max_frame_size ` +
          `of ${maxSize} bytes`,
      );
    }
    return new Promise((resolve, reject) => {
      const timeout = this.#options.requestTimeout;
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new RequestTimeoutError(
            `no answer to ${JSON.stringify(op)} within ${timeout} ms`,
          ),
        );
      }, timeout);
      this.#pending.set(id, { resolve, reject, timer });
      ws.send(text);
    });
  }

  /**
   * Close the session for good (code 1000): no reconnection; pending
   * requests reject with ConnectionLostError, push iterators end. Resolves
   * once the socket has closed (at most requestTimeout later). Calling it
   * again does nothing.
   */
  close() {
    if (this.closed) return Promise.resolve();
    clearTimeout(this.#timer);
    this.#timer = null;
    const ws = this.#ws;
    this.#ws = null; // its close event is no news any more
    if (ws !== null) {
      this.#closeCode = 1000;
      this.#closeReason = "";
    }
    this.#rejectPending(new ConnectionLostError("the session was closed", 1000));
    this.#setState(SessionState.CLOSED);
    if (ws === null || ws.readyState === WebSocket.CLOSED) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, this.#options.requestTimeout);
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.close(1000);
    });
  }

  /**
   * Open a connection and read its hello: resolve once it arrived, reject
   * with ConnectError when the socket closes (or times out) before.
   */
  #open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#url, SUBPROTOCOL);
      this.#ws = ws;
      let greeted = false;
      const fail = (error) => {
        clearTimeout(helloTimer);
        reject(error);
        if (ws.readyState !== WebSocket.CLOSED) ws.close();
      };
      const helloTimer = setTimeout(() => {
        fail(
          new ConnectError(
            `no hello from ${this.#url} within ${this.#options.requestTimeout} ms`,
          ),
        );
      }, this.#options.requestTimeout);
      ws.addEventListener("open", () => {
        if (ws.protocol !== SUBPROTOCOL) {
          fail(
            new ConnectError(
              `the server at ${this.#url} did not select the subprotocol ` +
                `${SUBPROTOCOL} (it chose ${JSON.stringify(ws.protocol)}): ` +
                "is it a session_ws_endpoint?",
              null,
              false,
            ),
          );
        }
      });
      ws.addEventListener("message", (event) => {
        if (ws !== this.#ws) return;
        const frame = parseFrame(event.data);
        if (frame === null) {
          console.warn("session-ws: ignored a frame that is not a JSON object");
          return;
        }
        if (greeted) {
          this.#frame(frame);
          return;
        }
        const error = this.#hello(frame);
        if (error) {
          fail(error);
          return;
        }
        greeted = true;
        clearTimeout(helloTimer);
        resolve();
      });
      ws.addEventListener("close", (event) => {
        clearTimeout(helloTimer);
        if (!greeted) {
          reject(
            new ConnectError(
              `the connection to ${this.#url} closed with ${event.code} ` +
                "before the hello",
              event.code,
              !FINAL_CLOSE_CODES.has(event.code),
            ),
          );
        }
        if (ws !== this.#ws) return; // replaced, or closed by close()
        this.#ws = null;
        this.#closeCode = event.code;
        this.#closeReason = event.reason;
        if (!greeted) return; // #open's caller decides what follows
        this.#rejectPending(
          new ConnectionLostError(
            `the connection was lost (close code ${event.code})`,
            event.code,
          ),
        );
        this.#lost(event.code);
      });
    });
  }

  /** Take the hello's fields; return a ConnectError if it is not one. */
  #hello(frame) {
    if (
      frame.op !== "hello" ||
      typeof frame.session !== "string" ||
      typeof frame.connection !== "string"
    ) {
      return new ConnectError(
        `the first frame from ${this.#url} is not a hello`,
        null,
        false,
      );
    }
    if (frame.version !== PROTOCOL_VERSION) {
      return new ConnectError(
        `the server speaks protocol version ${frame.version}, ` +
          `this client ${PROTOCOL_VERSION}`,
        null,
        false,
      );
    }
    this.#sessionId = frame.session;
    this.#connectionId = frame.connection;
    const limits = frame.limits;
    this.#limits = Object.freeze(
      limits !== null && typeof limits === "object" ? { ...limits } : {},
    );
    this.#countMissed(frame);
    return null;
  }

  /** An open connection ended: reconnect, or close for good. */
  #lost(code) {
    if (this.#options.reconnect && !FINAL_CLOSE_CODES.has(code)) {
      this.#attempt = 0;
      this.#setState(SessionState.RECONNECTING);
      this.#scheduleReconnect();
    } else {
      this.#setState(SessionState.CLOSED);
    }
  }

  /** Wait a random time up to the capped, doubling ceiling (full jitter). */
  #scheduleReconnect() {
    const { reconnectDelay, reconnectMaxDelay, maxReconnectAttempts } =
      this.#options;
    if (maxReconnectAttempts !== null && this.#attempt >= maxReconnectAttempts) {
      console.warn(
        `session-ws: gave up reconnecting to ${this.#url} ` +
          `after ${this.#attempt} attempts`,
      );
      this.#setState(SessionState.CLOSED);
      return;
    }
    const ceiling = Math.min(
      reconnectMaxDelay,
      reconnectDelay * 2 ** Math.min(this.#attempt, 32),
    );
    this.#attempt++;
    this.#timer = setTimeout(() => this.#reconnect(), Math.random() * ceiling);
  }

  async #reconnect() {
    this.#timer = null;
    try {
      await this.#open();
    } catch (error) {
      if (this.#state !== SessionState.RECONNECTING) return; // closed meanwhile
      if (error instanceof ConnectError && !error.retryable) {
        console.warn(`session-ws: stopped reconnecting: ${error.message}`);
        this.#setState(SessionState.CLOSED);
      } else {
        this.#scheduleReconnect();
      }
      return;
    }
    if (this.#state === SessionState.RECONNECTING) {
      this.#setState(SessionState.CONNECTED);
    }
  }

  /** A server frame after the hello: a reply or a push. */
  #frame(frame) {
    this.#countMissed(frame);
    if (frame.op === "push") {
      for (const entry of [...this.#pushListeners]) {
        call(entry.listener, frame.data);
      }
    } else if (frame.op === "result" || frame.op === "error") {
      const entry = this.#pending.get(frame.id);
      if (entry === undefined) {
        if (frame.op === "error") {
          console.warn(
            `session-ws: error frame for no pending request: ${frame.code}: ` +
              `${frame.message}`,
          );
        }
        return;
      }
      this.#pending.delete(frame.id);
      clearTimeout(entry.timer);
      if (frame.op === "result") {
        entry.resolve(frame.data);
      } else {
        entry.reject(
          new ProtocolError(String(frame.code), String(frame.message ?? "")),
        );
      }
    } // other ops (a newer server's) are left alone
  }

  #countMissed(frame) {
    const missed = frame.missed;
    if (Number.isInteger(missed) && missed > 0) {
      this.#missed += missed;
      for (const entry of [...this.#missedListeners]) {
        call(entry.listener, missed);
      }
    }
  }

  #rejectPending(error) {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
  }

  #setState(state) {
    const old = this.#state;
    if (old === state) return;
    this.#state = state;
    for (const entry of [...this.#stateListeners]) {
      call(entry.listener, old, state);
    }
  }
}

/** Resolve against the page; http: becomes ws:, https: becomes wss:. */
function resolveUrl(url) {
  const base = typeof location === "undefined" ? undefined : location.href;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  else if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    throw new SyntaxError(`not a websocket URL: ${resolved.href}`);
  }
  resolved.hash = "";
  return resolved.href;
}

function checkOptions(options) {
  const unknown = Object.keys(options).filter((name) => !(name in DEFAULTS));
  if (unknown.length) {
    throw new TypeError(`unknown options of connect(): ${unknown.join(", ")}`);
  }
  const merged = { ...DEFAULTS, ...options };
  for (const name of ["requestTimeout", "reconnectDelay", "reconnectMaxDelay"]) {
    const value = merged[name];
    if (typeof value !== "number" || !(value > 0)) {
      throw new RangeError(`${name} must be a positive number, not ${value}`);
    }
  }
  const attempts = merged.maxReconnectAttempts;
  if (attempts !== null && !(Number.isInteger(attempts) && attempts >= 0)) {
    throw new RangeError(
      `maxReconnectAttempts must be a whole number or null, not ${attempts}`,
    );
  }
  for (const name of ["onState", "onPush"]) {
    if (merged[name] !== undefined && typeof merged[name] !== "function") {
      throw new TypeError(`${name} must be a function`);
    }
  }
  return Object.freeze(merged);
}

function addListener(listeners, listener) {
  if (typeof listener !== "function") {
    throw new TypeError("a listener is a function");
  }
  const entry = { listener }; // one entry per call: the same function may come twice
  listeners.add(entry);
  return () => {
    listeners.delete(entry);
  };
}

/** Call a listener; what it throws is reported, and the others still run. */
function call(listener, ...args) {
  try {
    listener(...args);
  } catch (error) {
    if (typeof reportError === "function") {
      reportError(error);
    } else {
      setTimeout(() => {
        throw error;
      });
    }
  }
}

/** A server frame, or null when it is not a JSON object. */
function parseFrame(data) {
  if (typeof data !== "string") return null;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return null;
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame)) {
    return null;
  }
  return frame;
}

let encoder = null;

/**
 * The UTF-8 size of ``text`` (what max_frame_size counts) when it may be over
 * ``limit``; else its length, a lower bound.
 */
function utf8Length(text, limit) {
  if (text.length * 3 <= limit) return text.length; // 3 bytes a unit at most
  encoder ??= new TextEncoder();
  return encoder.encode(text).length;
}

function now() {
  return typeof performance === "undefined" ? Date.now() : performance.now();
}
