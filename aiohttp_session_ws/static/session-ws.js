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

/** When a session lock is released without an unlock() (docs/client-browser.rst, "Locks"). */
export const SessionLockScope = Object.freeze({
  /** When the session ends (logout, a new session ws id, its grace period
   * over), wherever its connections are: it outlives a reconnection. */
  UNLOCK_ON_SESSION_LOSS: 0,
  /** When the connection that took it closes: the weaker scope. */
  UNLOCK_ON_CONNECTION_LOSS: 1,
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

/**
 * A messaging request failed (docs/client-browser.rst, "Messaging"): the
 * server's error for a messaging op, or one responder's error in a filter send.
 */
export class MessagingError extends ProtocolError {
  /**
   * @param {string} code such as "no_handler", "rejected", "bad_filter"
   * @param {string} message the server's message, for humans
   * @param {number | null} position where a bad filter fails to parse
   */
  constructor(code, message, position = null) {
    super(code, message);
    this.name = "MessagingError";
    /** The index in the filter where it fails to parse (bad_filter); else null. */
    this.position = position;
  }
}

/**
 * A handler refused a request: throw it in a handler to send its message
 * back; a caller gets one for the code "rejected".
 */
export class RejectedError extends MessagingError {
  /** @param {string} message what the caller reads */
  constructor(message) {
    super("rejected", String(message));
    this.name = "RejectedError";
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

/** The Session's hooks for its Messaging (module-private). */
const SEND = Symbol("send");
const TELL = Symbol("tell");
const FRAME = Symbol("frame");
const CONNECTED = Symbol("connected");
const LOST = Symbol("lost");
/** A SessionLock's hooks for its Session (module-private). */
const END = Symbol("end");
const GRANT = Symbol("grant");
const CHECKED = Symbol("checked");
/** The Session's hooks for its Events (module-private). */
const MISSED = Symbol("missed");
const RESUME = Symbol("resume");

/** What a request frame without a matching registration is answered. */
const NO_HANDLER_MESSAGE = "no handler for that path on this connection";
/** What a handler that failed (not with RejectedError) is answered. */
const FAILED_MESSAGE = "the handler failed";
/** The server's default timeout of a messaging request, in milliseconds. */
const DEFAULT_MESSAGING_TIMEOUT = 10000;
/** How much longer than a messaging timeout the client waits (ms): the
 * server's own timeout answer comes first. */
const ANSWER_SLACK = 1000;
/** Seconds the server waits when the client takes a lock again after a
 * reconnection (one it still holds comes back at once). */
const RETAKE_TIMEOUT = 0.1;

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
  /** @type {Messaging} */
  #messaging;
  /** @type {Events} */
  #events;
  /** @type {Map<string, SessionLock>} the locks this client holds, by name */
  #locks = new Map();
  /** @type {{name: string, sequence: number, resolve: Function}[]} unlocks
   * to send once connected again */
  #releases = [];

  /** Made by connect(), not directly. */
  constructor(token, url, options) {
    if (token !== TOKEN) {
      throw new TypeError("make a Session with connect(url, options)");
    }
    this.#url = url;
    this.#options = options;
    this.#messaging = new Messaging(TOKEN, this);
    this.#events = new Events(TOKEN, this);
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

  /** Request-response messaging: handlers for paths, and requests to send. */
  get messaging() {
    return this.#messaging;
  }

  /**
   * The event bus (docs/client-browser.rst, "Events"): subscriptions that
   * resume after each reconnection, registering, queries.
   */
  get events() {
    return this.#events;
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
   * Take the session lock ``name`` (a path such as ``"docs/42"``) for this
   * session: resolve to a SessionLock once it is granted, first come, first
   * served among sessions. A lock this session holds comes back at once: the
   * same object while this client holds it.
   *
   * ``scope``: SessionLockScope.UNLOCK_ON_SESSION_LOSS (the default; it
   * outlives a reconnection) or UNLOCK_ON_CONNECTION_LOSS (released when
   * this connection closes). ``timeout``: milliseconds to wait at most
   * (ProtocolError "timeout"); without it the wait has no end but the
   * connection's, and requestTimeout does not bound it. ``signal``: an
   * AbortSignal whose abort withdraws the request (the promise rejects with
   * the signal's reason; a grant that raced the abort is released).
   *
   * Rejects with ProtocolError ("forbidden", "bad_frame", "timeout",
   * "not_found"...), ConnectionLostError, or the signal's reason.
   * @returns {Promise<SessionLock>}
   */
  async lock(name, options = {}) {
    const checked = checkMessagingOptions("lock", options, {
      scope: undefined,
      timeout: undefined,
      signal: undefined,
    });
    const { timeout, signal } = checked;
    const scope = checked.scope ?? SessionLockScope.UNLOCK_ON_SESSION_LOSS;
    if (typeof name !== "string") {
      throw new TypeError(`a lock's name is a string, not ${typeof name}`);
    }
    if (scope !== 0 && scope !== 1) {
      throw new RangeError(`scope is a SessionLockScope (0 or 1), not ${scope}`);
    }
    if (timeout !== undefined && (typeof timeout !== "number" || !(timeout > 0))) {
      throw new RangeError(`timeout must be a positive number, not ${timeout}`);
    }
    if (
      signal !== undefined &&
      (signal === null ||
        typeof signal.aborted !== "boolean" ||
        typeof signal.addEventListener !== "function")
    ) {
      throw new TypeError("signal must be an AbortSignal");
    }
    if (signal?.aborted) throw signal.reason;
    const args = { name, scope };
    if (timeout !== undefined) args.timeout = timeout / 1000;
    const wait = timeout === undefined ? null : timeout + ANSWER_SLACK;
    const { id, promise } = this.#send("lock", args, wait);
    const connection = this.#connectionId;
    if (signal === undefined) {
      return this.#granted(await promise, connection);
    }
    const data = await new Promise((resolve, reject) => {
      const aborted = () => {
        reject(signal.reason);
        try {
          this[TELL]("cancel", { request: id });
        } catch {
          // not connected: the request ended with its connection
        }
        // the grant may have raced the cancel: release it
        promise.then(
          (data) => this.#unwanted(data),
          () => {},
        );
      };
      signal.addEventListener("abort", aborted, { once: true });
      promise.then(
        (data) => {
          signal.removeEventListener("abort", aborted);
          resolve(data);
        },
        (error) => {
          signal.removeEventListener("abort", aborted);
          reject(error);
        },
      );
    });
    return this.#granted(data, connection);
  }

  /**
   * Who holds the session lock ``name`` now, and how many sessions wait:
   * ``{name, owner, sequence, scope, waiting, queue}`` (``owner`` is a public
   * handle, or null when the lock is free; ``queue`` lists the waiting
   * sessions' handles, first first, when the server's backend tells them,
   * else it is empty).
   */
  async lockInfo(name) {
    if (typeof name !== "string") {
      throw new TypeError(`a lock's name is a string, not ${typeof name}`);
    }
    return lockInfoOf(await this.request("lock_info", { name }));
  }

  /** A lock op's result: the SessionLock, the same object for the same grant. */
  #granted(data, connection) {
    const grant = grantOf(data);
    const held = this.#locks.get(grant.name);
    if (held !== undefined && held.isOwned && held.sequence === grant.sequence) {
      held[GRANT](grant.scope, connection); // its scope may have weakened
      return held;
    }
    if (held !== undefined) this.#lose(held, "granted again with another sequence");
    const lock = new SessionLock(TOKEN, grant, connection, (lock) =>
      this.#unlock(lock),
    );
    this.#locks.set(grant.name, lock);
    return lock;
  }

  /** A grant nobody wants (it raced a cancel): release it, unless held here. */
  #unwanted(data) {
    let grant;
    try {
      grant = grantOf(data);
    } catch {
      return;
    }
    const held = this.#locks.get(grant.name);
    if (held !== undefined && held.isOwned && held.sequence === grant.sequence) {
      return; // this page holds it already, by another call
    }
    this.#release(grant.name, grant.sequence).catch(() => {});
  }

  async #unlock(lock) {
    if (!lock.isOwned) return false;
    this.#forget(lock);
    lock[END](null);
    return this.#release(lock.name, lock.sequence);
  }

  /**
   * Send ``unlock``: true if the session held it. While reconnecting, the
   * unlock waits for the next connection; closed for good, it is false.
   */
  async #release(name, sequence) {
    if (this.#state === SessionState.CONNECTED) {
      try {
        const data = await this.#send("unlock", { name, sequence }).promise;
        return data?.unlocked === true;
      } catch (error) {
        if (!(error instanceof ConnectionLostError)) throw error;
      }
    }
    if (this.#state === SessionState.CLOSED) return false;
    return new Promise((resolve) => {
      this.#releases.push({ name, sequence, resolve });
    });
  }

  /** The lock is lost: tell its listeners. */
  #lose(lock, reason) {
    this.#forget(lock);
    lock[END](reason);
  }

  #forget(lock) {
    if (this.#locks.get(lock.name) === lock) this.#locks.delete(lock.name);
  }

  /** A connection ended: its connection-scoped locks went with it. */
  #connectionLost() {
    for (const lock of [...this.#locks.values()]) {
      if (lock.scope === SessionLockScope.UNLOCK_ON_CONNECTION_LOSS) {
        this.#lose(lock, "connection lost");
      }
    }
  }

  /** Closed for good: no lock can be told or released any more. */
  #closedLocks() {
    for (const lock of [...this.#locks.values()]) {
      this.#lose(lock, "the session was closed");
    }
    for (const release of this.#releases.splice(0)) release.resolve(false);
  }

  /**
   * A reconnection's hello arrived: send the unlocks that waited for it,
   * and check that the session still holds each lock it held.
   */
  #reconnectedLocks() {
    for (const { name, sequence, resolve } of this.#releases.splice(0)) {
      this.#release(name, sequence).then(resolve, () => resolve(false));
    }
    const connection = this.#connectionId;
    for (const lock of [...this.#locks.values()]) {
      if (lock[CHECKED] !== connection) {
        this.#check(lock, connection).catch((error) => {
          console.warn(
            `session-ws: could not check the lock ${JSON.stringify(lock.name)} ` +
              `after the reconnection: ${error.message}`,
          );
        });
      }
    }
  }

  /**
   * Ask lock_info whether this session still holds the lock with the same
   * sequence (else it is lost); then take it again on this connection,
   * which comes back at once, so that the server tells this connection when
   * it is lost later.
   */
  async #check(lock, connection) {
    const handle = this.#sessionId;
    let info;
    try {
      info = await this.request("lock_info", { name: lock.name });
    } catch (error) {
      if (error instanceof ConnectionLostError) return; // the next one checks
      this.#lose(lock, `lost while disconnected (could not check: ${error.message})`);
      return;
    }
    if (!lock.isOwned || this.#connectionId !== connection) return;
    if (info?.owner !== handle || info?.sequence !== lock.sequence) {
      this.#lose(lock, "lost while disconnected");
      return;
    }
    let data;
    try {
      data = await this.#send(
        "lock",
        { name: lock.name, scope: lock.scope, timeout: RETAKE_TIMEOUT },
        RETAKE_TIMEOUT * 1000 + ANSWER_SLACK,
      ).promise;
    } catch (error) {
      if (error instanceof ConnectionLostError) return;
      if (error instanceof ProtocolError && error.code === "timeout") {
        this.#lose(lock, "lost while disconnected");
        return;
      }
      throw error;
    }
    if (data?.sequence !== lock.sequence) {
      this.#unwanted(data); // a new grant: it went meanwhile
      if (lock.isOwned) this.#lose(lock, "lost while disconnected");
      return;
    }
    if (lock.isOwned) lock[CHECKED] = connection;
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
      return this.#send(op, args).promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Send a request for Messaging: ``{id, promise}``, so that frames keyed
   * by the request's id can be told apart before its result arrives.
   * ``timeout`` (ms) bounds the wait instead of requestTimeout when longer;
   * ``makeError(frame)`` makes the rejection of an error frame. Throws what
   * request() rejects with.
   */
  [SEND](op, args, { timeout = 0, makeError = undefined } = {}) {
    const wait = Math.max(timeout, this.#options.requestTimeout);
    return this.#send(op, args, wait, makeError);
  }

  #send(op, args, timeout = this.#options.requestTimeout, makeError = undefined) {
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
    const promise = new Promise((resolve, reject) => {
      // a null timeout: no timer (a lock waits as long as the server does)
      const timer =
        timeout === null
          ? null
          : setTimeout(() => {
              this.#pending.delete(id);
              reject(
                new RequestTimeoutError(
                  `no answer to ${JSON.stringify(op)} within ${timeout} ms`,
                ),
              );
            }, timeout);
      this.#pending.set(id, { resolve, reject, timer, makeError });
      ws.send(text);
    });
    return { id, promise };
  }

  /**
   * Send a frame that is not a request (no id, no reply): an answer.
   * Throws ConnectionLostError when not connected, ProtocolError
   * ("too_large") over the server's max_frame_size, and TypeError when JSON
   * cannot carry args.
   * @internal
   */
  [TELL](op, args) {
    const ws = this.#ws;
    if (this.#state !== SessionState.CONNECTED || ws === null) {
      throw new ConnectionLostError(
        `cannot send ${JSON.stringify(op)}: the session is ${this.#state}`,
        this.#closeCode,
      );
    }
    const text = JSON.stringify({ op, ...args });
    const maxSize = this.#limits.max_frame_size;
    if (typeof maxSize === "number" && utf8Length(text, maxSize) > maxSize) {
      throw new ProtocolError(
        "too_large",
        `${JSON.stringify(op)} is over the server's max_frame_size of ${maxSize} bytes`,
      );
    }
    ws.send(text);
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
    const lost = new ConnectionLostError("the session was closed", 1000);
    this.#rejectPending(lost);
    this.#messaging[LOST](lost);
    this.#events[LOST]();
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
        const lost = new ConnectionLostError(
          `the connection was lost (close code ${event.code})`,
          event.code,
        );
        this.#rejectPending(lost);
        this.#messaging[LOST](lost);
        this.#events[LOST]();
        this.#connectionLost();
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
      this.#messaging[CONNECTED]();
      this.#reconnectedLocks();
      this.#events[CONNECTED]();
    }
  }

  /** A server frame after the hello: a reply, a push, or messaging's. */
  #frame(frame) {
    const missed = this.#countMissed(frame);
    try {
      this.#dispatch(frame);
    } finally {
      // after the frame: its events count in the id to resume from
      if (missed) this.#events[MISSED]();
    }
  }

  #dispatch(frame) {
    if (frame.op === "request" || frame.op === "response") {
      this.#messaging[FRAME](frame);
    } else if (frame.op === "events" || frame.op === "events_lost") {
      this.#events[FRAME](frame);
    } else if (frame.op === "lock_lost") {
      const lock = this.#locks.get(frame.name);
      if (lock !== undefined && lock.sequence === frame.sequence) {
        this.#lose(lock, String(frame.reason ?? "lost"));
      }
    } else if (frame.op === "push") {
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
      } else if (entry.makeError) {
        entry.reject(entry.makeError(frame));
      } else {
        entry.reject(
          new ProtocolError(String(frame.code), String(frame.message ?? "")),
        );
      }
    } // other ops (a newer server's) are left alone
  }

  /** Count a frame's ``missed``; true when it says frames were dropped. */
  #countMissed(frame) {
    const missed = frame.missed;
    if (Number.isInteger(missed) && missed > 0) {
      this.#missed += missed;
      for (const entry of [...this.#missedListeners]) {
        call(entry.listener, missed);
      }
      return true;
    }
    return false;
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
    if (state === SessionState.CLOSED) {
      this.#closedLocks();
      this.#events[END]();
    }
    for (const entry of [...this.#stateListeners]) {
      call(entry.listener, old, state);
    }
  }
}

/**
 * A session lock this client holds (what session.lock() resolves to):
 * ``unlock()`` it, or hear when it is lost with ``onLost`` or ``lost``.
 * ``sequence`` is its fencing token: every later grant of the name has a
 * larger one.
 */
class SessionLock {
  #name;
  #sequence;
  #scope;
  #owner;
  #owned = true;
  #unlock;
  #listeners = new Set();
  /** @type {string | null} why it was lost */
  #reason = null;
  #resolveLost;
  /** @type {Promise<string>} */
  #lost;

  /** Made by session.lock(), not directly. */
  constructor(token, grant, connection, unlock) {
    if (token !== TOKEN) {
      throw new TypeError("take a lock with session.lock(name)");
    }
    this.#name = grant.name;
    this.#sequence = grant.sequence;
    this.#scope = grant.scope;
    this.#owner = grant.owner;
    this.#unlock = unlock;
    this.#lost = new Promise((resolve) => {
      this.#resolveLost = resolve;
    });
    /** The connection it was taken (or last checked) on. @internal */
    this[CHECKED] = connection;
  }

  /** The lock's name, such as "docs/42". */
  get name() {
    return this.#name;
  }

  /** The fencing token of this grant: later grants of the name have larger ones. */
  get sequence() {
    return this.#sequence;
  }

  /** When it is released without an unlock(): a SessionLockScope value. */
  get scope() {
    return this.#scope;
  }

  /** The public handle of the session that holds it: this one's. */
  get owner() {
    return this.#owner;
  }

  /**
   * Whether the session still holds it, as far as this client knows: false
   * once unlocked or lost. It can go stale at once; a resource that must be
   * safe checks the sequence.
   */
  get isOwned() {
    return this.#owned;
  }

  /**
   * Resolves to why the lock was lost, once it is; never settles when it is
   * unlocked instead.
   * @returns {Promise<string>}
   */
  get lost() {
    return this.#lost;
  }

  /**
   * Release the lock: resolves to true if the session still held it. While
   * reconnecting, the unlock goes out once the connection is back.
   * @returns {Promise<boolean>}
   */
  unlock() {
    return this.#unlock(this);
  }

  /**
   * Call ``listener(reason, lock)`` when the lock is lost (not when it is
   * unlocked); at once (in a microtask) if it was lost already.
   * @returns {() => void} removes the listener
   */
  onLost(listener) {
    const remove = addListener(this.#listeners, listener);
    if (this.#reason !== null) {
      const reason = this.#reason;
      queueMicrotask(() => {
        remove();
        call(listener, reason, this);
      });
    }
    return remove;
  }

  /** Granted again (the same sequence): on this connection, maybe weaker. */
  [GRANT](scope, connection) {
    this.#scope = scope;
    this[CHECKED] = connection;
  }

  /** No longer owned: ``reason`` says why it was lost, null when unlocked. */
  [END](reason) {
    if (!this.#owned) return;
    this.#owned = false;
    if (reason === null) return;
    this.#reason = reason;
    this.#resolveLost(reason);
    for (const entry of [...this.#listeners]) {
      this.#listeners.delete(entry);
      call(entry.listener, reason, this);
    }
  }
}

/** The grant of a lock op's result: ``{name, sequence, scope, owner}``. */
function grantOf(data) {
  if (
    data === null ||
    typeof data !== "object" ||
    typeof data.name !== "string" ||
    !Number.isSafeInteger(data.sequence)
  ) {
    throw new ProtocolError("internal", "a lock's result has no name or sequence");
  }
  return {
    name: data.name,
    sequence: data.sequence,
    scope:
      data.scope === SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
        ? SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
        : SessionLockScope.UNLOCK_ON_SESSION_LOSS,
    owner: typeof data.owner === "string" ? data.owner : "",
  };
}

/** What lockInfo() resolves to, from lock_info's data. */
function lockInfoOf(data) {
  if (data === null || typeof data !== "object") {
    throw new ProtocolError("internal", "lock_info must be an object");
  }
  const orNull = (value, type) => (typeof value === type ? value : null);
  return Object.freeze({
    name: String(data.name),
    owner: orNull(data.owner, "string"),
    sequence: orNull(data.sequence, "number"),
    scope: orNull(data.scope, "number"),
    waiting: Number.isInteger(data.waiting) ? data.waiting : 0,
    queue: Object.freeze(Array.isArray(data.queue) ? data.queue.map(String) : []),
  });
}

/**
 * Request-response messaging of one Session (``session.messaging``):
 * handlers this page registers for paths, and requests it sends to a path,
 * to a session, or to the sessions a filter selects.
 */
class Messaging {
  #session;
  /** @type {Map<string, HandlerEntry>} by handlerKey(path, addressed) */
  #handlers = new Map();
  /** @type {Map<number, FilterResponses>} by the send_to_filter request's id */
  #filters = new Map();

  /** Made by its Session, not directly. */
  constructor(token, session) {
    if (token !== TOKEN) {
      throw new TypeError("use session.messaging");
    }
    this.#session = session;
  }

  /**
   * Handle the requests sent to ``path`` (and the paths below it that have
   * no handler of their own) with ``handler(value, context)``; the server
   * picks one of the connections that registered the path.
   * ``sessionProperties``: the sender's properties the handler gets.
   * @returns {Promise<Registration>}
   */
  async addRequestHandler(path, handler, options = {}) {
    const { sessionProperties } = checkMessagingOptions(
      "addRequestHandler",
      options,
      { sessionProperties: [] },
    );
    return this.#add(path, handler, false, sessionProperties);
  }

  /**
   * Handle the requests sent to this session for ``path`` (by its handle, or
   * by a filter that selects it), with ``addressed: true`` (the default);
   * ``addressed: false`` is addRequestHandler.
   * @returns {Promise<Registration>}
   */
  async addStreamHandler(path, handler, options = {}) {
    const { addressed, sessionProperties } = checkMessagingOptions(
      "addStreamHandler",
      options,
      { addressed: true, sessionProperties: [] },
    );
    if (typeof addressed !== "boolean") {
      throw new TypeError("addressed must be true or false");
    }
    return this.#add(path, handler, addressed, sessionProperties);
  }

  /**
   * Send ``request`` to the handler of ``path``; resolve to its response.
   * ``timeout``: milliseconds the server waits for the handler (default: the
   * server's, 10 s; it caps it at its request_timeout).
   */
  sendRequestToPath(path, request, options = {}) {
    return this.#ask("send_to_path", { path }, request, options);
  }

  /**
   * Send ``request`` to the handler of ``path`` that the session with the
   * public handle ``handle`` registered (addressed); resolve to its response.
   */
  sendRequestToSession(path, handle, request, options = {}) {
    const target = { path, session: handle };
    return this.#ask("send_to_session", target, request, options);
  }

  /**
   * Send ``request`` to every session the filter selects that registered an
   * addressed handler of ``path``. Resolves once the server counted them:
   * to a FilterResponses, ``expected`` set, which yields each response as it
   * comes (``for await``) and whose ``done`` resolves to ``{unanswered}``.
   * ``onResponse(response)`` is called for each one too.
   */
  async sendRequestToFilter(filter, path, request, options = {}) {
    const { timeout, onResponse } = checkMessagingOptions(
      "sendRequestToFilter",
      options,
      { timeout: undefined, onResponse: undefined },
    );
    if (typeof filter !== "string") {
      throw new TypeError("a session filter is a string");
    }
    if (onResponse !== undefined && typeof onResponse !== "function") {
      throw new TypeError("onResponse must be a function");
    }
    const args = messagingArgs({ filter, path }, request, timeout);
    const { id, promise } = this.#session[SEND]("send_to_filter", args, {
      timeout: timeout === undefined ? 0 : timeout + ANSWER_SLACK,
      makeError: errorOfFrame,
    });
    // responses come after the result: the collector waits from the start
    const wait = (timeout ?? DEFAULT_MESSAGING_TIMEOUT) + 5000;
    const responses = new FilterResponses(TOKEN, onResponse, wait, () => {
      if (this.#filters.get(id) === responses) this.#filters.delete(id);
    });
    this.#filters.set(id, responses);
    let data;
    try {
      data = await promise;
    } catch (error) {
      responses[LOST](error);
      throw error;
    }
    const expected = data?.expected;
    if (!(Number.isInteger(expected) && expected >= 0)) {
      const error = new ProtocolError("internal", "no count of the sessions");
      responses[LOST](error);
      throw error;
    }
    responses[CONNECTED](expected);
    return responses;
  }

  async #add(path, handler, addressed, properties) {
    if (typeof path !== "string") {
      throw new TypeError(`a message path is a string, not ${typeof path}`);
    }
    if (typeof handler !== "function") {
      throw new TypeError("a handler is a function");
    }
    if (
      !Array.isArray(properties) ||
      !properties.every((key) => typeof key === "string")
    ) {
      throw new TypeError("sessionProperties is an array of property keys");
    }
    const key = handlerKey(path, addressed);
    if (this.#handlers.has(key)) {
      throw new MessagingError(
        "handler_conflict",
        `this session already has a handler for ${JSON.stringify(path)}` +
          (addressed ? " (addressed)" : ""),
      );
    }
    const entry = {
      path,
      addressed,
      properties: [...properties],
      handler,
      connection: "",
      registering: Promise.resolve(),
    };
    this.#handlers.set(key, entry);
    try {
      await this.#register(entry);
    } catch (error) {
      if (this.#handlers.get(key) === entry) this.#handlers.delete(key);
      throw error;
    }
    return new Registration(TOKEN, entry, () => this.#remove(key, entry));
  }

  /** Send an entry's add_handler on the current connection. */
  #register(entry) {
    entry.connection = this.#session.connectionId;
    const args = { path: entry.path, addressed: entry.addressed };
    if (entry.properties.length) args.properties = entry.properties;
    const { promise } = this.#session[SEND]("add_handler", args, {
      makeError: errorOfFrame,
    });
    entry.registering = promise.then(
      () => {},
      () => {},
    );
    return promise;
  }

  async #remove(key, entry) {
    if (this.#handlers.get(key) !== entry) return;
    this.#handlers.delete(key); // its requests are refused from now on
    await entry.registering;
    if (this.#session.state !== SessionState.CONNECTED) return; // gone with it
    if (entry.connection !== this.#session.connectionId) return;
    try {
      await this.#session[SEND](
        "remove_handler",
        { path: entry.path, addressed: entry.addressed },
        { makeError: errorOfFrame },
      ).promise;
    } catch (error) {
      if (!(error instanceof ConnectionLostError)) throw error;
    }
  }

  async #ask(op, target, request, options) {
    const { timeout } = checkMessagingOptions(
      op === "send_to_path" ? "sendRequestToPath" : "sendRequestToSession",
      options,
      { timeout: undefined },
    );
    const args = messagingArgs(target, request, timeout);
    return this.#session[SEND](op, args, {
      timeout: timeout === undefined ? 0 : timeout + ANSWER_SLACK,
      makeError: errorOfFrame,
    }).promise;
  }

  /** A new connection's hello arrived: register the handlers on it. */
  [CONNECTED]() {
    const connection = this.#session.connectionId;
    for (const entry of [...this.#handlers.values()]) {
      if (entry.connection === connection) continue; // added meanwhile
      this.#register(entry).catch((error) => {
        console.warn(
          `session-ws: could not register the handler for ` +
            `${JSON.stringify(entry.path)} again: ${error.message}`,
        );
      });
    }
  }

  /** The connection ended: the filter sends in progress end with it. */
  [LOST](error) {
    const filters = [...this.#filters.values()];
    this.#filters.clear();
    for (const responses of filters) responses[LOST](error);
  }

  /** A server frame of messaging: a request to handle, or a filter's response. */
  [FRAME](frame) {
    if (frame.op === "response") {
      this.#filters.get(frame.request)?.[FRAME](frame);
    } else {
      this.#handle(frame);
    }
  }

  async #handle(frame) {
    const conversation = frame.conversation;
    if (!Number.isInteger(conversation)) {
      console.warn("session-ws: ignored a request frame without a conversation");
      return;
    }
    const connection = this.#session.connectionId;
    const addressed = frame.addressed === true;
    const entry = this.#handlers.get(handlerKey(frame.handler, addressed));
    if (entry === undefined) {
      this.#respond(connection, { conversation, error: NO_HANDLER_MESSAGE });
      return;
    }
    const properties = frame.properties;
    const context = Object.freeze({
      path: typeof frame.path === "string" ? frame.path : entry.path,
      handlerPath: entry.path,
      sender: typeof frame.session === "string" ? frame.session : null,
      sessionProperties: Object.freeze(
        properties !== null && typeof properties === "object"
          ? { ...properties }
          : {},
      ),
      addressed,
    });
    let value;
    try {
      value = await entry.handler(frame.data, context);
    } catch (error) {
      if (error instanceof RejectedError) {
        this.#respond(connection, { conversation, error: error.serverMessage });
      } else {
        console.error(
          `session-ws: the handler for ${JSON.stringify(entry.path)} failed:`,
          error,
        );
        this.#respond(connection, { conversation, error: FAILED_MESSAGE });
      }
      return;
    }
    const answer = { conversation, data: value === undefined ? null : value };
    if (!this.#respond(connection, answer)) {
      this.#respond(connection, { conversation, error: FAILED_MESSAGE });
    }
  }

  /**
   * Send the answer frame on the connection the request came on; false when
   * the response cannot be sent (JSON cannot carry it, or it is too large).
   */
  #respond(connection, args) {
    if (connection !== this.#session.connectionId) return true; // that one ended
    try {
      this.#session[TELL]("answer", args);
    } catch (error) {
      if (error instanceof ConnectionLostError) return true;
      console.error("session-ws: could not send a handler's response:", error);
      return false;
    }
    return true;
  }
}

/** What addRequestHandler and addStreamHandler resolve to. */
class Registration {
  #entry;
  #close;
  /** @type {Promise<void> | null} */
  #closing = null;

  /** Made by session.messaging, not directly. */
  constructor(token, entry, close) {
    if (token !== TOKEN) {
      throw new TypeError("register with session.messaging.addRequestHandler");
    }
    this.#entry = entry;
    this.#close = close;
  }

  /** The path registered. */
  get path() {
    return this.#entry.path;
  }

  /** Whether it handles the requests sent to this session (not to the path). */
  get addressed() {
    return this.#entry.addressed;
  }

  /** Whether close() was called. */
  get closed() {
    return this.#closing !== null;
  }

  /**
   * Stop handling: requests that arrive from now on are refused, and the
   * server forgets the registration. Calling it again does nothing more.
   */
  close() {
    this.#closing ??= this.#close();
    return this.#closing;
  }
}

/**
 * The responses of one filter send: ``expected``, then each response as it
 * arrives (``for await``); ``done`` resolves to ``{unanswered}`` at the end.
 */
class FilterResponses {
  #items = [];
  #waiters = [];
  #onResponse;
  #forget;
  /** @type {any} */
  #timer;
  /** @type {Error | null} */
  #error = null;
  #ended = false;
  #expected = null;
  #received = 0;
  /** @type {string[] | null} */
  #unanswered = null;
  #settle;
  /** @type {Promise<{unanswered: string[]}>} */
  #done;

  /** Made by sendRequestToFilter, not directly. */
  constructor(token, onResponse, wait, forget) {
    if (token !== TOKEN) {
      throw new TypeError("use session.messaging.sendRequestToFilter");
    }
    this.#onResponse = onResponse;
    this.#forget = forget;
    this.#done = new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.#done.catch(() => {}); // a reader of the iterator alone hears it there
    this.#timer = setTimeout(() => {
      const message = `the filter's responses did not end within ${wait} ms`;
      this[LOST](new RequestTimeoutError(message));
    }, wait);
  }

  /** How many sessions the filter selected: the responses to expect. */
  get expected() {
    return this.#expected;
  }

  /** How many responses came so far. */
  get received() {
    return this.#received;
  }

  /** The handles of the sessions that did not answer in time; null until the end. */
  get unanswered() {
    return this.#unanswered;
  }

  /** Resolves to ``{unanswered}`` once every response came or the time is up. */
  get done() {
    return this.#done;
  }

  next() {
    if (this.#items.length) {
      return Promise.resolve({ done: false, value: this.#items.shift() });
    }
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
  }

  /** Leaving a ``for await`` loop drops the responses held unread. */
  return() {
    this.#items.length = 0;
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The result came: ``expected`` responses follow. */
  [CONNECTED](expected) {
    this.#expected = expected;
    if (expected === 0) this.#end([]);
  }

  /** A response frame of this send. */
  [FRAME](frame) {
    if (this.#ended) return;
    if (frame.done === true) {
      const unanswered = Array.isArray(frame.unanswered)
        ? frame.unanswered.map(String)
        : [];
      this.#end(unanswered);
      return;
    }
    const session = typeof frame.session === "string" ? frame.session : "";
    const error = frame.error;
    const response = Object.freeze(
      error !== undefined && error !== null
        ? { session, value: null, error: errorOfFrame(error) }
        : { session, value: frame.data ?? null, error: null },
    );
    this.#received++;
    if (this.#onResponse) call(this.#onResponse, response);
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve({ done: false, value: response });
    else this.#items.push(response);
  }

  /** The connection ended (or the time is up) before the last response frame. */
  [LOST](error) {
    if (this.#ended) return;
    this.#finish();
    this.#error = error;
    this.#settle.reject(error);
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  #end(unanswered) {
    if (this.#ended) return;
    this.#finish();
    this.#unanswered = Object.freeze(unanswered);
    this.#settle.resolve(Object.freeze({ unanswered: this.#unanswered }));
    for (const waiter of this.#waiters.splice(0)) {
      waiter.resolve({ done: true, value: undefined });
    }
  }

  #finish() {
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#forget();
  }
}

/**
 * The event bus of one Session (``session.events``, docs/client-browser.rst,
 * "Events"): subscriptions by event type that resume after each
 * reconnection, registering events, and queries of the log.
 */
class Events {
  #session;
  /** @type {Map<number, EventSubscription>} by the server's subscription id */
  #byId = new Map();
  /** @type {Set<EventSubscription>} the open ones */
  #open = new Set();
  /** How many frames said the server dropped frames. */
  #drops = 0;

  /** Made by its Session, not directly. */
  constructor(token, session) {
    if (token !== TOKEN) {
      throw new TypeError("use session.events");
    }
    this.#session = session;
  }

  /**
   * Subscribe to the events of ``types`` (query types such as ``"chat/*"``,
   * ``"a/?/c"``); resolve once the server answered, to an EventSubscription.
   * ``since`` (an event id) and ``epoch`` (the epoch it came from): the
   * retained events after it come first, marked ``replayed``. ``onEvent``:
   * called with each event instead of holding it for ``for await``.
   * ``maxBuffer``: unread events held at most (the oldest go first).
   * After each reconnection, and after a frame that says the server dropped
   * frames, the client subscribes again from the last event it got: an app
   * gets every event once, in order.
   * @returns {Promise<EventSubscription>}
   */
  async subscribe(types, options = {}) {
    const { since, epoch, onEvent, maxBuffer } = checkMessagingOptions(
      "subscribe",
      options,
      { since: undefined, epoch: undefined, onEvent: undefined, maxBuffer: 10000 },
    );
    const queryTypes = checkTypes(types, "types");
    if (since !== undefined && since !== null) parseEventId(since, "since");
    if (epoch !== undefined && epoch !== null && typeof epoch !== "string") {
      throw new TypeError("epoch must be a string");
    }
    if (onEvent !== undefined && typeof onEvent !== "function") {
      throw new TypeError("onEvent must be a function");
    }
    if (!(Number.isInteger(maxBuffer) && maxBuffer >= 1)) {
      throw new RangeError(`maxBuffer must be a positive whole number, not ${maxBuffer}`);
    }
    const subscription = new EventSubscription(TOKEN, {
      types: queryTypes,
      onEvent,
      maxBuffer,
      close: (subscription) => this.#close(subscription),
    });
    const args = { types: queryTypes };
    if (since !== undefined && since !== null) args.since = since;
    if (epoch !== undefined && epoch !== null) args.epoch = epoch;
    const drops = this.#drops;
    const data = await this.#session[SEND]("subscribe", args).promise;
    this.#started(subscription, data, since ?? null);
    // frames dropped meanwhile may be its first ones: fill the gap
    if (this.#drops !== drops) this.#resubscribe(subscription);
    return subscription;
  }

  /**
   * Register events (``[{type, sourceTimestamp?, payload?}]``; a payload is
   * ``{type: "json", data}`` or ``{type: "binary", name, data}``, data a
   * Uint8Array or ArrayBuffer). The server gives their ids (consecutive)
   * and one timestamp. With ``response: true`` it resolves to the
   * registered events; else to null.
   * @returns {Promise<EventBusEvent[] | null>}
   */
  async register(events, options = {}) {
    const { response } = checkMessagingOptions("register", options, {
      response: false,
    });
    if (typeof response !== "boolean") {
      throw new TypeError("response must be true or false");
    }
    if (!Array.isArray(events)) {
      throw new TypeError("register takes an array of events");
    }
    const args = { events: events.map(registerEventJson) };
    if (response) args.response = true;
    const data = await this.#session.request("register_events", args);
    if (!response) return null;
    return Object.freeze(eventsOf(data?.events, false));
  }

  /**
   * The latest event of each type that ``types`` select (all types when
   * omitted): ``{events, moreFollows}``.
   * @returns {Promise<EventQueryResult>}
   */
  async queryLatest(types = undefined) {
    const args = {};
    if (types !== undefined && types !== null) {
      args.event_types = checkTypes(types, "types");
    }
    return queryResultOf(await this.#session.request("query_latest", args));
  }

  /**
   * The retained events that ``params`` select (``eventTypes``, ``tFrom``,
   * ``tTo``, ``sourceTFrom``, ``sourceTTo`` in seconds, ``order``
   * "descending" (the default) or "ascending", ``orderBy`` "timestamp" or
   * "source_timestamp", ``maxResults``, ``lastEventId`` to page on):
   * ``{events, moreFollows}``.
   * @returns {Promise<EventQueryResult>}
   */
  async queryTimeseries(params = {}) {
    const checked = checkMessagingOptions("queryTimeseries", params, TIMESERIES_ARGS);
    const args = {};
    for (const [name, wire] of Object.entries(TIMESERIES_WIRE)) {
      const value = checked[name];
      if (value === undefined || value === null) continue;
      args[wire] = name === "eventTypes" ? checkTypes(value, "eventTypes") : value;
    }
    return queryResultOf(await this.#session.request("query_timeseries", args));
  }

  /** A subscribe answer: the subscription has a server id, and goes on. */
  #started(subscription, data, since) {
    const id = data?.subscription;
    if (!Number.isInteger(id)) {
      throw new ProtocolError("internal", "a subscribe result has no subscription");
    }
    if (subscription.closed) {
      this.#unsubscribe(id); // closed while it was on its way
      return;
    }
    const recovered = typeof data.recovered === "boolean" ? data.recovered : null;
    const reason = typeof data.reason === "string" ? data.reason : null;
    const position = typeof data.position === "string" ? data.position : null;
    const epoch = typeof data.epoch === "string" ? data.epoch : null;
    this.#byId.set(id, subscription);
    this.#open.add(subscription);
    subscription[CONNECTED](id, { recovered, reason, position, epoch, since });
  }

  /** Subscribe again from the last id: after a reconnection, or dropped frames. */
  async #resubscribe(subscription) {
    if (subscription.closed || this.#session.state !== SessionState.CONNECTED) {
      return;
    }
    if (subscription[MISSED] !== null) {
      subscription[MISSED] = true; // once the one on its way is answered
      return;
    }
    subscription[MISSED] = false;
    const old = subscription.id;
    if (old !== null) {
      this.#byId.delete(old); // its later frames are ignored
      subscription[LOST]();
      this.#unsubscribe(old);
    }
    const since = subscription[RESUME];
    const args = { types: [...subscription.types], since };
    if (subscription.epoch !== null) args.epoch = subscription.epoch;
    let data;
    try {
      data = await this.#session[SEND]("subscribe", args).promise;
    } catch (error) {
      subscription[MISSED] = null;
      if (error instanceof ConnectionLostError) return; // the next hello retries
      if (
        error instanceof ProtocolError &&
        (error.code === "unavailable" || error.code === "timeout")
      ) {
        console.warn(`session-ws: could not subscribe again: ${error.message}`);
        const connection = this.#session.connectionId;
        setTimeout(() => {
          if (this.#session.connectionId === connection) this.#resubscribe(subscription);
        }, RESUBSCRIBE_DELAY);
        return;
      }
      console.warn(`session-ws: could not subscribe again: ${error.message}`);
      this.#open.delete(subscription);
      subscription[END](error);
      return;
    }
    const again = subscription[MISSED] === true;
    subscription[MISSED] = null;
    try {
      this.#started(subscription, data, since);
    } catch (error) {
      this.#open.delete(subscription);
      subscription[END](error);
      return;
    }
    if (again) this.#resubscribe(subscription);
  }

  /** Send ``unsubscribe`` for a server id, when connected; its answer is no news. */
  #unsubscribe(id) {
    if (this.#session.state !== SessionState.CONNECTED) return;
    try {
      this.#session[SEND]("unsubscribe", { subscription: id }).promise.catch(() => {});
    } catch {
      // not connected: it ended with its connection
    }
  }

  async #close(subscription) {
    this.#open.delete(subscription);
    const id = subscription.id;
    if (id === null) return;
    this.#byId.delete(id);
    if (this.#session.state !== SessionState.CONNECTED) return;
    try {
      await this.#session[SEND]("unsubscribe", { subscription: id }).promise;
    } catch (error) {
      if (!(error instanceof ConnectionLostError)) throw error;
    }
  }

  /** A server frame: ``events`` or ``events_lost`` of a subscription. */
  [FRAME](frame) {
    const subscription = this.#byId.get(frame.subscription);
    if (subscription === undefined) return; // an old one's, or closed
    if (frame.op === "events") {
      subscription[FRAME](frame);
    } else {
      const epoch = typeof frame.epoch === "string" ? frame.epoch : null;
      const reason = String(frame.reason ?? "the event history was lost");
      subscription[GRANT](epoch, reason);
    }
  }

  /** The server dropped frames: each subscription may have lost some. */
  [MISSED]() {
    this.#drops++;
    for (const subscription of [...this.#open]) this.#resubscribe(subscription);
  }

  /** A new connection's hello arrived: subscribe again. */
  [CONNECTED]() {
    for (const subscription of [...this.#open]) this.#resubscribe(subscription);
  }

  /** The connection ended: the server's subscriptions ended with it. */
  [LOST]() {
    this.#byId.clear();
    for (const subscription of this.#open) {
      subscription[LOST]();
      subscription[MISSED] = null;
    }
  }

  /** The session is closed for good: every subscription ends. */
  [END]() {
    const open = [...this.#open];
    this.#open.clear();
    this.#byId.clear();
    for (const subscription of open) subscription[END](null);
  }
}

/** The id to resume from when a subscription has seen nothing, on an empty log. */
const FIRST_ID = "0-0";
/** Milliseconds before subscribing again when the event log was unavailable. */
const RESUBSCRIBE_DELAY = 1000;

const TIMESERIES_WIRE = Object.freeze({
  eventTypes: "event_types",
  tFrom: "t_from",
  tTo: "t_to",
  sourceTFrom: "source_t_from",
  sourceTTo: "source_t_to",
  order: "order",
  orderBy: "order_by",
  maxResults: "max_results",
  lastEventId: "last_event_id",
});
const TIMESERIES_ARGS = Object.freeze(
  Object.fromEntries(Object.keys(TIMESERIES_WIRE).map((name) => [name, undefined])),
);

/**
 * A subscription of session.events (what subscribe() resolves to): read
 * its events with ``for await`` (or onEvent), each once, in id order, with
 * ``replayed`` true for those the server replayed from its log.
 */
class EventSubscription {
  #types;
  #onEvent;
  #maxBuffer;
  #close;
  /** @type {number | null} the server's subscription id, while it has one */
  #id = null;
  /** @type {boolean | null} */
  #recovered = null;
  /** @type {string | null} */
  #reason = null;
  /** @type {string | null} */
  #lastId = null;
  /** @type {string | null} */
  #epoch = null;
  /** @type {string | null} */
  #position = null;
  /** The id to subscribe again from: the last event's, or where the log stood. */
  #resume = FIRST_ID;
  #items = [];
  #waiters = [];
  #listeners = new Set();
  /** @type {Error | null} why it ended, when it failed */
  #error = null;
  #ended = false;
  /** @type {Promise<void> | null} */
  #closing = null;
  #dropped = 0;

  /** Made by session.events.subscribe(), not directly. */
  constructor(token, { types, onEvent, maxBuffer, close }) {
    if (token !== TOKEN) {
      throw new TypeError("subscribe with session.events.subscribe(types)");
    }
    this.#types = Object.freeze([...types]);
    this.#onEvent = onEvent;
    this.#maxBuffer = maxBuffer;
    this.#close = close;
    /** Whether a subscribe again is on its way (false), and needed after it
     * (true); null when none is. @internal */
    this[MISSED] = null;
  }

  /** The query types subscribed to. */
  get types() {
    return this.#types;
  }

  /** The server's id of the subscription on this connection; null between two. */
  get id() {
    return this.#id;
  }

  /**
   * Whether the last subscribe got every event after the id it resumed
   * from: true, false (see reason; live events go on), or null (it gave no
   * id: the first subscribe without since).
   */
  get recovered() {
    return this.#recovered;
  }

  /** Why the last subscribe did not recover (or why the history was lost); else null. */
  get reason() {
    return this.#reason;
  }

  /** The id of the last event delivered (of this epoch); null while none has been. */
  get lastId() {
    return this.#lastId;
  }

  /** The epoch of the log the events come from. */
  get epoch() {
    return this.#epoch;
  }

  /** Where the log stood at the last subscribe answer (null: it was empty). */
  get position() {
    return this.#position;
  }

  /** Events dropped because nobody read them (over maxBuffer). */
  get dropped() {
    return this.#dropped;
  }

  /** Whether it ended: close(), the session closed, or it failed (error). */
  get closed() {
    return this.#ended;
  }

  /** Why it ended when it failed (a subscribe again was refused); else null. */
  get error() {
    return this.#error;
  }

  /**
   * Call ``listener(reason, subscription)`` each time a subscribe again did
   * not recover every event, or the server's history was lost: the events
   * between are gone, live ones go on. At once (in a microtask) when the
   * last subscribe did not recover.
   * @returns {() => void} removes the listener
   */
  onNotRecovered(listener) {
    const remove = addListener(this.#listeners, listener);
    if (this.#recovered === false) {
      const reason = this.#reason ?? "";
      queueMicrotask(() => {
        if (this.#recovered === false) call(listener, reason, this);
      });
    }
    return remove;
  }

  /** Unsubscribe: the iteration ends after what it holds. Again: nothing more. */
  close() {
    if (this.#closing === null) {
      this.#closing = this.#close(this); // reads the server's id first
      this.#finish(null);
    }
    return this.#closing;
  }

  next() {
    if (this.#items.length) {
      return Promise.resolve({ done: false, value: this.#items.shift() });
    }
    if (this.#ended) {
      if (this.#error !== null) return Promise.reject(this.#error);
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
  }

  /** Leaving a ``for await`` loop closes the subscription. */
  return() {
    this.#items.length = 0;
    this.close().catch(() => {});
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** A subscribe answer: its server id, and whether it recovered. */
  [CONNECTED](id, { recovered, reason, position, epoch, since }) {
    this.#id = id;
    if (epoch !== null) {
      if (this.#epoch !== null && epoch !== this.#epoch) {
        this.#lastId = null; // the ids of another log: they start anew
      }
      this.#epoch = epoch;
    }
    this.#position = position;
    if (since === null || recovered === false) {
      // live from where the log stands: resume from there
      this.#resume = position ?? FIRST_ID;
    }
    this.#recovered = recovered;
    this.#reason = recovered === false ? reason ?? "not recovered" : null;
    if (recovered === false && since !== null) this.#notRecovered();
  }

  /** The connection ended (or a subscribe again replaces it): no server id. */
  [LOST]() {
    this.#id = null;
  }

  /** The id to subscribe again from. @internal */
  get [RESUME]() {
    return this.#resume;
  }

  /** The server's history was lost (events_lost): a new epoch follows. */
  [GRANT](epoch, reason) {
    this.#lastId = null;
    this.#position = null;
    this.#resume = FIRST_ID; // every event of the new log
    if (epoch !== null) this.#epoch = epoch;
    this.#recovered = false;
    this.#reason = reason;
    this.#notRecovered();
  }

  /** An ``events`` frame: deliver the new ones, in order, once each. */
  [FRAME](frame) {
    if (this.#ended || !Array.isArray(frame.events)) return;
    const replayed = frame.replay === true;
    for (const item of frame.events) {
      let event;
      try {
        event = eventOf(item, replayed);
      } catch (error) {
        console.warn(`session-ws: ignored an event: ${error.message}`);
        continue;
      }
      if (this.#lastId !== null && compareEventIds(event.id, this.#lastId) <= 0) {
        continue; // had it already
      }
      this.#lastId = event.id;
      this.#resume = event.id;
      this.#deliver(event);
    }
  }

  /** Closed for good (null), or failed (an error): the iteration ends. */
  [END](error) {
    this.#finish(error);
  }

  #deliver(event) {
    if (this.#onEvent !== undefined) {
      call(this.#onEvent, event);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ done: false, value: event });
      return;
    }
    if (this.#items.length >= this.#maxBuffer) {
      this.#items.shift();
      this.#dropped++;
    }
    this.#items.push(event);
  }

  #notRecovered() {
    const reason = this.#reason ?? "";
    for (const entry of [...this.#listeners]) call(entry.listener, reason, this);
  }

  #finish(error) {
    if (this.#ended) return;
    this.#ended = true;
    this.#id = null;
    this.#error = error;
    for (const waiter of this.#waiters.splice(0)) {
      if (error === null) waiter.resolve({ done: true, value: undefined });
      else waiter.reject(error);
    }
  }
}

/**
 * Compare two event ids ``"<ms>-<n>"`` as numbers, (ms, n): negative when
 * ``a`` comes first, 0 when equal, positive when after. Text comparison
 * would put "9-0" after "10-0".
 */
export function compareEventIds(a, b) {
  const [ams, an] = parseEventId(a, "an event id");
  const [bms, bn] = parseEventId(b, "an event id");
  return compareDigits(ams, bms) || compareDigits(an, bn);
}

/** The digits of an id's two parts, without leading zeros. */
function parseEventId(text, what) {
  const found = typeof text === "string" ? /^(\d+)-(\d+)$/.exec(text) : null;
  if (found === null || text.length > 40) {
    throw new TypeError(`${what} is an event id "<ms>-<n>", not ${JSON.stringify(text)}`);
  }
  return [found[1].replace(/^0+(?=\d)/, ""), found[2].replace(/^0+(?=\d)/, "")];
}

/** Compare two whole numbers written in digits (no leading zeros), exactly. */
function compareDigits(a, b) {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Query types: an array of strings such as "a/*" (the server checks them). */
function checkTypes(types, name) {
  if (!Array.isArray(types) || !types.every((type) => typeof type === "string")) {
    throw new TypeError(`${name} is an array of event type strings such as "a/*"`);
  }
  return [...types];
}

/** The wire form of an event to register. */
function registerEventJson(event) {
  if (event === null || typeof event !== "object") {
    throw new TypeError("an event to register is an object with a type");
  }
  const unknown = Object.keys(event).filter(
    (name) => !["type", "sourceTimestamp", "payload"].includes(name),
  );
  if (unknown.length) {
    throw new TypeError(`unknown fields of an event to register: ${unknown.join(", ")}`);
  }
  if (typeof event.type !== "string") {
    throw new TypeError("an event's type is a string such as \"a/b/c\"");
  }
  const wire = { type: event.type };
  const at = event.sourceTimestamp;
  if (at !== undefined && at !== null) {
    if (typeof at !== "number" || !Number.isFinite(at)) {
      throw new TypeError("sourceTimestamp is a number of seconds");
    }
    wire.source_timestamp = at;
  }
  const payload = event.payload;
  if (payload !== undefined && payload !== null) {
    if (payload.type === "json") {
      wire.payload = { type: "json", data: payload.data ?? null };
    } else if (payload.type === "binary") {
      if (typeof payload.name !== "string") {
        throw new TypeError("a binary payload has a name, such as \"image/png\"");
      }
      wire.payload = { type: "binary", name: payload.name, data: toBase64(payload.data) };
    } else {
      throw new TypeError('a payload is {type: "json", data} or {type: "binary", name, data}');
    }
  }
  return wire;
}

/** The events of a result or frame. */
function eventsOf(items, replayed) {
  if (!Array.isArray(items)) {
    throw new ProtocolError("internal", "no list of events");
  }
  return items.map((item) => eventOf(item, replayed));
}

/** An event from its wire form: ``{id, type, timestamp, sourceTimestamp, payload, replayed}``. */
function eventOf(item, replayed) {
  if (item === null || typeof item !== "object" || typeof item.type !== "string") {
    throw new ProtocolError("internal", "an event has no type");
  }
  parseEventId(item.id, "an event's id");
  const wire = item.payload;
  let payload = null;
  if (wire !== null && typeof wire === "object") {
    payload =
      wire.type === "binary"
        ? Object.freeze({ type: "binary", name: String(wire.name), data: fromBase64(wire.data) })
        : Object.freeze({ type: "json", data: wire.data ?? null });
  }
  return Object.freeze({
    id: item.id,
    type: item.type,
    timestamp: typeof item.timestamp === "number" ? item.timestamp : 0,
    sourceTimestamp:
      typeof item.source_timestamp === "number" ? item.source_timestamp : null,
    payload,
    replayed,
  });
}

/** What a query resolves to. */
function queryResultOf(data) {
  return Object.freeze({
    events: Object.freeze(eventsOf(data?.events, false)),
    moreFollows: data?.more_follows === true,
  });
}

function toBase64(data) {
  let bytes;
  if (data instanceof Uint8Array) bytes = data;
  else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) {
    bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } else throw new TypeError("a binary payload's data is a Uint8Array or ArrayBuffer");
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  const binary = atob(String(text ?? ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The key of a registration: one per (path, addressed) per connection. */
function handlerKey(path, addressed) {
  return `${addressed ? "1" : "0"}${path}`;
}

/** The MessagingError (RejectedError for "rejected") of an error frame or object. */
function errorOfFrame(frame) {
  const code = String(frame.code);
  const message = String(frame.message ?? "");
  if (code === "rejected") return new RejectedError(message);
  const position = Number.isInteger(frame.position) ? frame.position : null;
  return new MessagingError(code, message, position);
}

/** The arguments of a send op: ``target``, the data, the timeout in seconds. */
function messagingArgs(target, request, timeout) {
  for (const [name, value] of Object.entries(target)) {
    if (typeof value !== "string") {
      throw new TypeError(`${name} must be a string, not ${typeof value}`);
    }
  }
  const args = { ...target, data: request === undefined ? null : request };
  if (timeout !== undefined) {
    if (typeof timeout !== "number" || !(timeout > 0)) {
      throw new RangeError(`timeout must be a positive number, not ${timeout}`);
    }
    args.timeout = timeout / 1000;
  }
  return args;
}

/** ``options`` with its defaults; an unknown name is a TypeError. */
function checkMessagingOptions(method, options, defaults) {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`the options of ${method}() are an object`);
  }
  const unknown = Object.keys(options).filter((name) => !(name in defaults));
  if (unknown.length) {
    throw new TypeError(`unknown options of ${method}(): ${unknown.join(", ")}`);
  }
  return { ...defaults, ...options };
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
