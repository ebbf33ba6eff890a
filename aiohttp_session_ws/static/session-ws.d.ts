/**
 * The browser client of aiohttp-session-ws's protocol: the types of
 * session-ws.js, for editors. See docs/client-browser.rst.
 */

/** The websocket subprotocol the client offers. */
export declare const SUBPROTOCOL: "aiohttp-session-ws.v1";

/** The protocol version this client speaks. */
export declare const PROTOCOL_VERSION: 1;

/** Where a session stands; state listeners hear every change. */
export declare const SessionState: Readonly<{
  /** Opening the first connection (before connect() resolves). */
  CONNECTING: "connecting";
  /** A connection is open and its hello arrived: requests go out. */
  CONNECTED: "connected";
  /** The connection dropped; a new one is on its way (reconnect: true). */
  RECONNECTING: "reconnecting";
  /** For good: closed by close(), by the server (1000, 1008), or given up. */
  CLOSED: "closed";
}>;

/** One of SessionState's values. */
export type SessionState = (typeof SessionState)[keyof typeof SessionState];

/** When a session lock is released without an unlock(). */
export declare const SessionLockScope: Readonly<{
  /** When the session ends (logout, a new session ws id, its grace period over): it outlives a reconnection. */
  UNLOCK_ON_SESSION_LOSS: 0;
  /** When the connection that took it closes: the weaker scope. */
  UNLOCK_ON_CONNECTION_LOSS: 1;
}>;

/** One of SessionLockScope's values. */
export type SessionLockScope = (typeof SessionLockScope)[keyof typeof SessionLockScope];

/** The error codes of docs/protocol.rst; a newer server may send others. */
export type ErrorCode =
  | "bad_frame"
  | "unknown_op"
  | "too_large"
  | "forbidden"
  | "not_found"
  | "limit"
  | "timeout"
  | "unavailable"
  | "internal"
  | "no_handler"
  | "no_such_session"
  | "rejected"
  | "session_closed"
  | "handler_conflict"
  | "bad_filter"
  | "cancelled"
  | (string & {});

/** What JSON carries: the arguments of a request, the data of a result or push. */
export type JSONValue =
  | null
  | boolean
  | number
  | string
  | JSONValue[]
  | { [key: string]: JSONValue };

/** A request failed: the server answered with an error frame. */
export declare class ProtocolError extends Error {
  constructor(code: ErrorCode, message: string);
  /** The stable error code (docs/protocol.rst, "Error codes"). */
  readonly code: ErrorCode;
  /** The server's message alone; it may change between versions. */
  readonly serverMessage: string;
}

/** No answer came within requestTimeout; its code is "timeout", like the server's. */
export declare class RequestTimeoutError extends ProtocolError {
  constructor(message: string);
  readonly code: "timeout";
}

/** A request could not be answered: the connection dropped, or is not open. */
export declare class ConnectionLostError extends Error {
  constructor(message: string, closeCode?: number | null);
  /** The close code of the connection that ended (1006: dropped); null if none did. */
  readonly closeCode: number | null;
}

/** A connection could not be opened, or did not start the protocol. */
export declare class ConnectError extends Error {
  constructor(message: string, closeCode?: number | null, retryable?: boolean);
  /**
   * The close code, when the socket closed; a browser says 1006 for a
   * refused upgrade (it does not tell the HTTP status).
   */
  readonly closeCode: number | null;
  /** Whether another attempt may succeed (reconnection stops if not). */
  readonly retryable: boolean;
}

/**
 * A messaging request failed: the server's error for a messaging op, or one
 * responder's error in a filter send.
 */
export declare class MessagingError extends ProtocolError {
  constructor(code: ErrorCode, message: string, position?: number | null);
  /** Where the filter fails to parse (code "bad_filter"); else null. */
  readonly position: number | null;
}

/**
 * A handler refused a request: throw it in a handler to send its message
 * back; a caller gets one for the code "rejected".
 */
export declare class RejectedError extends MessagingError {
  constructor(message: string);
  readonly code: "rejected";
}

/** The limits the server applies, from its hello (docs/protocol.rst, "Limits"). */
export interface Limits {
  /** Bytes of one client frame. */
  readonly max_frame_size: number;
  /** Requests of one connection in progress at once. */
  readonly max_pending: number;
  /** Client frames per second, on average. */
  readonly rate: number;
  /** Client frames in a burst. */
  readonly burst: number;
  /** Server frames waiting for a client that reads slowly. */
  readonly max_queue: number;
}

/** Hears a change of state. */
export type StateListener = (oldState: SessionState, newState: SessionState) => void;

/** Hears a push: the data the application sent. */
export type PushListener<T = unknown> = (data: T) => void;

/** The options of connect(). */
export interface ConnectOptions {
  /**
   * Reconnect after the connection drops, unless the server closed it with
   * 1000 (the session's websockets were closed: logout) or 1008. Default
   * false. The first connection is not retried.
   */
  reconnect?: boolean;
  /** Milliseconds to wait for the hello, and for the answer of each request. Default 35000 (a little over the server's 30 s, so its timeout answer comes first). */
  requestTimeout?: number;
  /** The backoff's first ceiling in milliseconds; each attempt waits a random
   * time up to the ceiling, which doubles... Default 200. */
  reconnectDelay?: number;
  /** ...up to this. Default 10000. */
  reconnectMaxDelay?: number;
  /** Attempts after one drop before the session closes; null (the default): no end. */
  maxReconnectAttempts?: number | null;
  /** Added with addStateListener before the first connection. */
  onState?: StateListener;
  /** Added with onPush before the first connection. */
  onPush?: PushListener;
}

/** The options of Session.properties(). */
export interface PropertiesOptions {
  /** The public handle of another session to read (the server's policy decides). */
  sessionId?: string;
}

/** The options of Session.pushes(). */
export interface PushesOptions {
  /** Unread pushes held at most; past that the oldest is dropped. Default 1000. */
  maxBuffer?: number;
}

/** What Session.pushes() returns: an async iterator of push data. */
export interface Pushes<T = unknown> extends AsyncIterableIterator<T> {
  /** Pushes dropped here because nobody read them fast enough. */
  readonly dropped: number;
  /** Stop: the iterator ends after what it holds, and takes no more. */
  close(): void;
}

/** Who sent a request, and where, as its handler sees it. */
export interface RequestContext {
  /** The path the request was sent to. */
  readonly path: string;
  /** The registered path that serves it: path or a prefix of it. */
  readonly handlerPath: string;
  /** The public handle of the sender's session; null for server code. */
  readonly sender: string | null;
  /** The sender's properties the handler asked for when it registered. */
  readonly sessionProperties: Readonly<Record<string, string>>;
  /** True for a request sent to this session (by handle or by filter). */
  readonly addressed: boolean;
}

/**
 * Answers a request: returns the response (or a promise of it); throw
 * RejectedError to refuse with a message the caller reads.
 */
export type RequestHandler<T = any, R = unknown> = (
  value: T,
  context: RequestContext,
) => R | Promise<R>;

/** The options of addRequestHandler(). */
export interface RequestHandlerOptions {
  /** The sender's properties the handler gets ("$Principal", "*F", "*U"...). Default []. */
  sessionProperties?: string[];
}

/** The options of addStreamHandler(). */
export interface StreamHandlerOptions extends RequestHandlerOptions {
  /** Handle the requests sent to this session (true, the default) or to the path (false). */
  addressed?: boolean;
}

/** The options of sendRequestToPath() and sendRequestToSession(). */
export interface SendOptions {
  /** Milliseconds the server waits for the handler; default the server's (10 s), capped at its request_timeout. */
  timeout?: number;
}

/** One session's answer to a filter send: its value, or its error. */
export interface FilterResponse<R = unknown> {
  /** The public handle of the session that answered. */
  readonly session: string;
  /** The response; null when error is set. */
  readonly value: R | null;
  /** Why that session's handler failed (RejectedError for "rejected"); else null. */
  readonly error: MessagingError | null;
}

/** The options of sendRequestToFilter(). */
export interface FilterSendOptions<R = unknown> extends SendOptions {
  /** Called with each response as it arrives. */
  onResponse?: (response: FilterResponse<R>) => void;
}

/** The responses of one filter send, as they arrive. */
export interface FilterResponses<R = unknown>
  extends AsyncIterableIterator<FilterResponse<R>> {
  /** How many sessions the filter selected: the responses to expect. */
  readonly expected: number;
  /** How many responses came so far. */
  readonly received: number;
  /** The sessions that did not answer in time; null until the end. */
  readonly unanswered: readonly string[] | null;
  /**
   * Resolves once every response came or the time is up; rejects with
   * ConnectionLostError when the connection ended first.
   */
  readonly done: Promise<{ readonly unanswered: readonly string[] }>;
}

/** A handler registration: close() to stop handling. */
export interface Registration {
  /** The path registered. */
  readonly path: string;
  /** Whether it handles the requests sent to this session, not to the path. */
  readonly addressed: boolean;
  /** Whether close() was called. */
  readonly closed: boolean;
  /** Stop handling (op remove_handler); calling it again does nothing more. */
  close(): Promise<void>;
}

/**
 * Request-response messaging (session.messaging). Registrations are sent
 * again after each reconnection. Server errors reject with MessagingError.
 */
export interface Messaging {
  /** Handle the requests sent to path (and the paths below it without a handler). */
  addRequestHandler<T = any, R = unknown>(
    path: string,
    handler: RequestHandler<T, R>,
    options?: RequestHandlerOptions,
  ): Promise<Registration>;
  /** Handle the requests sent to this session for path (addressed: true, the default). */
  addStreamHandler<T = any, R = unknown>(
    path: string,
    handler: RequestHandler<T, R>,
    options?: StreamHandlerOptions,
  ): Promise<Registration>;
  /** Send a request to the handler of path; resolves to its response. */
  sendRequestToPath<R = unknown>(
    path: string,
    request: JSONValue,
    options?: SendOptions,
  ): Promise<R>;
  /** Send a request to the addressed handler of path of the session with that handle. */
  sendRequestToSession<R = unknown>(
    path: string,
    handle: string,
    request: JSONValue,
    options?: SendOptions,
  ): Promise<R>;
  /** Send a request to every session the filter selects; resolves once they are counted. */
  sendRequestToFilter<R = unknown>(
    filter: string,
    path: string,
    request: JSONValue,
    options?: FilterSendOptions<R>,
  ): Promise<FilterResponses<R>>;
}

/** The options of Session.lock(). */
export interface LockOptions {
  /** Default SessionLockScope.UNLOCK_ON_SESSION_LOSS. */
  scope?: SessionLockScope;
  /** Milliseconds to wait for the grant at most (ProtocolError "timeout"); default: no end, and requestTimeout does not apply. */
  timeout?: number;
  /** Its abort withdraws the request (op cancel): the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A session lock this client holds: what Session.lock() resolves to. */
export interface SessionLock {
  /** The lock's name, such as "docs/42". */
  readonly name: string;
  /** The fencing token of this grant: later grants of the name have larger ones. */
  readonly sequence: number;
  /** When it is released without an unlock(). */
  readonly scope: SessionLockScope;
  /** The public handle of the session that holds it (this one). */
  readonly owner: string;
  /** Whether the session still holds it, as far as this client knows. */
  readonly isOwned: boolean;
  /** Resolves to why it was lost; never settles if it is unlocked instead. */
  readonly lost: Promise<string>;
  /** Release it: true if the session still held it. While reconnecting, it goes out once connected. */
  unlock(): Promise<boolean>;
  /** Call listener(reason, lock) when it is lost (at once if it was); returns its remover. */
  onLost(listener: (reason: string, lock: SessionLock) => void): () => void;
}

/** Who holds a lock now, and who waits: what Session.lockInfo() resolves to. */
export interface LockInfo {
  readonly name: string;
  /** The public handle of the holding session; null when free. */
  readonly owner: string | null;
  readonly sequence: number | null;
  readonly scope: SessionLockScope | null;
  /** How many sessions wait for it. */
  readonly waiting: number;
  /** The waiting sessions' handles, first first, when the backend tells them; else empty. */
  readonly queue: readonly string[];
}

/** An event's payload: JSON data, or bytes with the name of their type. */
export type EventPayload =
  | { readonly type: "json"; readonly data: JSONValue }
  | { readonly type: "binary"; readonly name: string; readonly data: Uint8Array };

/** An event of the event bus, as the server registered it. */
export interface BusEvent {
  /** Its id, "<ms>-<n>": ids order the cluster's log (compare with compareEventIds, not as text). */
  readonly id: string;
  /** Its type, such as "chat/room1". */
  readonly type: string;
  /** When the server registered it, in seconds since the epoch. */
  readonly timestamp: number;
  /** When it happened, as its source says (seconds); null if not given. */
  readonly sourceTimestamp: number | null;
  readonly payload: EventPayload | null;
  /** True for an event the server replayed from its log (a since, or a subscribe again after a reconnection). */
  readonly replayed: boolean;
}

/** An event to register: the server gives its id and timestamp. */
export interface RegisterEvent {
  /** Its type, such as "chat/room1" (no "?", "*"; segments not empty). */
  type: string;
  /** When it happened, in seconds since the epoch. */
  sourceTimestamp?: number | null;
  payload?:
    | { type: "json"; data: JSONValue }
    | { type: "binary"; name: string; data: Uint8Array | ArrayBuffer | ArrayBufferView }
    | null;
}

/** The options of events.subscribe(). */
export interface SubscribeOptions {
  /** Resume after this event id: the retained events after it come first, replayed. */
  since?: string | null;
  /** The epoch that id came from (a subscription's epoch): another one is not recovered. */
  epoch?: string | null;
  /** Called with each event instead of holding it for for await. */
  onEvent?: (event: BusEvent) => void;
  /** Unread events held at most; past that the oldest are dropped (counted in dropped). Default 10000. */
  maxBuffer?: number;
}

/**
 * A subscription: each event once, in id order, across reconnections
 * (the client subscribes again from lastId after each hello, and after a
 * frame that says the server dropped frames).
 */
export interface EventSubscription extends AsyncIterableIterator<BusEvent> {
  /** The query types subscribed to. */
  readonly types: readonly string[];
  /** The server's id of it on this connection; null between two. */
  readonly id: number | null;
  /** Whether the last subscribe got every event after the id it resumed from; null when it gave none. */
  readonly recovered: boolean | null;
  /** Why the last subscribe did not recover, or why the history was lost; else null. */
  readonly reason: string | null;
  /** The id of the last event delivered (of this epoch); null while none has been. */
  readonly lastId: string | null;
  /** The epoch of the log the events come from. */
  readonly epoch: string | null;
  /** Where the log stood at the last subscribe answer; null when it was empty. */
  readonly position: string | null;
  /** Events dropped because nobody read them (over maxBuffer). */
  readonly dropped: number;
  /** Whether it ended: close(), the session closed, or it failed (error). */
  readonly closed: boolean;
  /** Why it failed (a subscribe again was refused); else null. */
  readonly error: Error | null;
  /**
   * Call listener(reason, subscription) each time a subscribe again did not
   * recover, or the server's history was lost; at once when the last
   * subscribe did not recover. Returns its remover.
   */
  onNotRecovered(listener: (reason: string, subscription: EventSubscription) => void): () => void;
  /** Unsubscribe: the iteration ends after what it holds. Leaving a for await loop does it too. */
  close(): Promise<void>;
}

/** What the queries resolve to. */
export interface EventQueryResult {
  readonly events: readonly BusEvent[];
  /** Whether there are more events than were returned (page on with lastEventId). */
  readonly moreFollows: boolean;
}

/** The parameters of events.queryTimeseries(); times in seconds since the epoch. */
export interface TimeseriesParams {
  /** Query types, such as "chat/*"; default every type. */
  eventTypes?: string[];
  tFrom?: number;
  tTo?: number;
  sourceTFrom?: number;
  sourceTTo?: number;
  /** Default "descending". */
  order?: "descending" | "ascending";
  /** Default "timestamp". */
  orderBy?: "timestamp" | "source_timestamp";
  maxResults?: number;
  /** Page on after this event of the previous page. */
  lastEventId?: string;
}

/** The event bus (session.events). Server errors reject with ProtocolError. */
export interface Events {
  /** Op "subscribe": resolves once the server answered. */
  subscribe(types: string[], options?: SubscribeOptions): Promise<EventSubscription>;
  /** Op "register_events": the registered events with response: true, else null. */
  register(events: RegisterEvent[], options?: { response?: false }): Promise<null>;
  register(events: RegisterEvent[], options: { response: true }): Promise<readonly BusEvent[]>;
  register(
    events: RegisterEvent[],
    options?: { response?: boolean },
  ): Promise<readonly BusEvent[] | null>;
  /** Op "query_latest": the latest event of each type the query types select (all when omitted). */
  queryLatest(types?: string[]): Promise<EventQueryResult>;
  /** Op "query_timeseries": the retained events the parameters select. */
  queryTimeseries(params?: TimeseriesParams): Promise<EventQueryResult>;
}

/** Compare two event ids "<ms>-<n>" as numbers: negative, 0 or positive. */
export declare function compareEventIds(a: string, b: string): number;

/** One protocol session: a connection, and its successors when reconnecting. */
export declare class Session {
  /** Made by connect(), not directly. */
  private constructor();
  /** The endpoint's URL, resolved (ws: or wss:). */
  readonly url: string;
  /** The session's public handle ($SessionId), from the last hello. */
  readonly sessionId: string;
  /** This connection's id ($ConnectionId), from the last hello. */
  readonly connectionId: string;
  /** Where the session stands. */
  readonly state: SessionState;
  /** Whether the session is closed for good. */
  readonly closed: boolean;
  /** The server's limits, from the last hello. */
  readonly limits: Limits;
  /** Request-response messaging: handlers for paths, and requests to send. */
  readonly messaging: Messaging;
  /** The event bus: subscriptions that resume after reconnections, registering, queries. */
  readonly events: Events;
  /** Pushes the server dropped for this session because it read too slowly. */
  readonly missed: number;
  /** The close code of the last connection that ended (1000 after close()); null while none has. */
  readonly closeCode: number | null;
  /** The close reason of the last connection that ended, often empty. */
  readonly closeReason: string;
  /** Call listener(oldState, newState) on each state change; returns its remover. */
  addStateListener(listener: StateListener): () => void;
  /** Call listener(data) for each push, at once; returns its remover. */
  onPush<T = unknown>(listener: PushListener<T>): () => void;
  /** Call listener(n) when a frame says the server dropped n pushes; returns its remover. */
  onMissed(listener: (missed: number) => void): () => void;
  /**
   * The pushes from now on, across reconnections; the iteration ends once
   * the session is closed for good and what it holds has been read.
   */
  pushes<T = unknown>(options?: PushesOptions): Pushes<T>;
  /** Op "ping": resolves to the round trip in milliseconds. */
  pingServer(): Promise<number>;
  /** Op "properties": the session's properties, string to string. */
  properties(options?: PropertiesOptions): Promise<Record<string, string>>;
  /**
   * Op "lock": take the session lock name for this session, once granted
   * (first come, first served). A lock the session holds comes back at once,
   * the same object while this client holds it. Rejects with ProtocolError
   * ("forbidden", "bad_frame", "timeout"...), ConnectionLostError, or the
   * signal's reason.
   */
  lock(name: string, options?: LockOptions): Promise<SessionLock>;
  /** Op "lock_info": who holds the lock name, and how many wait. */
  lockInfo(name: string): Promise<LockInfo>;
  /**
   * Send request op with args; resolve to the data of its result. Rejects
   * with ProtocolError, RequestTimeoutError, ConnectionLostError or TypeError.
   */
  request<T = unknown>(op: string, args?: { [key: string]: JSONValue }): Promise<T>;
  /** Close for good (code 1000); resolves once the socket has closed. */
  close(): Promise<void>;
}

/**
 * Open a protocol session with the endpoint at url: resolve it against the
 * page (http: becomes ws:, https: wss:), connect offering the subprotocol,
 * and resolve once the server's hello arrived. Rejects with ConnectError
 * when the first connection fails (it is not retried).
 */
export declare function connect(url: string | URL, options?: ConnectOptions): Promise<Session>;
