"""The demo's page: HTML and a module script on the browser client, no build step."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

from .users import USERS

INDEX_HTML = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aiohttp-session-ws demo &ndash; {{NODE}}</title>
<link rel="icon" href="data:,">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem;
         margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.6rem; }
  #state { padding: .6rem 1rem; border-radius: .4rem; font-weight: bold;
           font-size: 1.2rem; }
  .connecting { background: #eee; color: #444; }
  .open { background: #d9f5df; color: #11602a; }
  .closed { background: #fbd9d9; color: #8a1111; border: 2px solid #8a1111; }
  /* labels wrap within 15rem, so the value column keeps room for the ids */
  dl { display: grid; grid-template-columns: minmax(0, 15rem) minmax(0, 1fr);
       gap: .3rem 1rem; }
  dt { font-weight: bold; }
  dd { margin: 0; min-width: 0; }
  code, #session, #connection, #node, #backend, #user, #pushes li {
    overflow-wrap: anywhere; word-break: break-all; }
  #result { color: #444; min-height: 1.5em; overflow-wrap: anywhere; }
  form { display: flex; flex-wrap: wrap; gap: .3rem; align-items: center; }
  form label { flex: 1 0 100%; font-weight: bold; }
  form input { flex: 1 1 10rem; min-width: 0; font: inherit; padding: .3rem; }
  #pushes, #responses, #handled, #feed { padding-left: 1.5rem; }
  #feed li { overflow-wrap: anywhere; }
  #feed .replayed { color: #5a3d00; background: #fff3d6; }
  #feed-state.lost { color: #8a1111; font-weight: bold; }
  #responses li, #handled li, #answering { overflow-wrap: anywhere; }
  form select { font: inherit; padding: .3rem; max-width: 100%; }
  h2 { font-size: 1.2rem; margin-top: 2rem; }
  .hint { color: #444; font-size: .9rem; }
  button { font: inherit; padding: .3rem .8rem; margin: 0 .3rem .3rem 0; }
  #documents { list-style: none; padding: 0; }
  #documents li { border: 1px solid #ccc; border-radius: .4rem;
                  padding: .4rem .8rem; margin-bottom: .5rem; }
  #documents .doc-state { overflow-wrap: anywhere; margin: .2rem 0; }
  #documents .editing { border-color: #11602a; background: #d9f5df; }
  /* narrow screens (a phone is 375 px wide): each value under its label */
  @media (max-width: 40rem) {
    body { margin: 1rem auto; }
    dl { grid-template-columns: minmax(0, 1fr); gap: 0; }
    dd { margin: 0 0 .5rem; }
  }
</style>
</head>
<body>
<h1>aiohttp-session-ws demo</h1>
<p id="state" class="connecting">Connecting&hellip;</p>
<dl>
  <dt>Node</dt><dd><code id="node">{{NODE}}</code></dd>
  <dt>Backend</dt><dd id="backend">{{BACKEND}}</dd>
  <dt>Connection</dt><dd><code id="connection">&ndash;</code></dd>
  <dt>Session (its public handle)</dt><dd><code id="session">&ndash;</code></dd>
  <dt>Open websockets of this session, on every node</dt>
  <dd id="connections">&ndash;</dd>
  <dt>Logged in as</dt><dd id="user">&ndash;</dd>
</dl>
<form id="login" method="post" action="/login">
  <label for="login-user">Log in as a demo user</label>
  <select id="login-user" name="user">
{{USERS}}
  </select>
  <button type="submit">Log in</button>
</form>
<form id="push" method="post" action="/push">
  <label for="text">Push to every tab of this session, on every node</label>
  <input id="text" name="text" maxlength="500" required autocomplete="off">
  <button type="submit">Push</button>
</form>
<ol id="pushes"></ol>
<p>
  <button id="reset">Reset ws id</button>
  <button id="logout">Log out</button>
  <button id="reconnect" disabled>Reconnect</button>
</p>
<p id="result"></p>
<h2>Messaging</h2>
<p id="answering">Log in to answer requests on <code>demo/echo</code>.</p>
<p>
  <label><input type="checkbox" id="answer" checked> Answer requests sent to
  the path <code>demo/echo</code></label><br>
  <label><input type="checkbox" id="refuse"> Refuse requests (the handler
  throws <code>RejectedError</code>)</label>
</p>
<form id="send">
  <label for="message">Send a request</label>
  <select id="kind" aria-label="to">
    <option value="path">to the path's handler</option>
    <option value="session">to a session (its handle)</option>
    <option value="filter">to a session filter</option>
  </select>
  <input id="path" value="demo/echo" aria-label="path" required autocomplete="off">
  <input id="target" aria-label="handle or filter" autocomplete="off"
         placeholder="a session's handle, or a filter">
  <input id="message" maxlength="500" aria-label="message" required
         autocomplete="off" placeholder="message">
  <button type="submit">Send</button>
</form>
<p class="hint">Filters select sessions by their properties, such as
<code>$Principal is 'bob'</code> or <code>hasRoles ['user']</code>.</p>
<ol id="responses"></ol>
<p class="hint">Requests this tab answered:</p>
<ol id="handled"></ol>
<h2>Shared documents</h2>
<p id="editing-hint" class="hint">One tab at a time edits a document: its
<em>Edit</em> button takes the session lock of the document's name, and the
other tabs wait in line, first come, first served. The edit lock is
connection-scoped (<code>UNLOCK_ON_CONNECTION_LOSS</code>): closing the tab
that holds it, or logging out, hands it to the next tab in line. The holder
shows the lock's sequence: its fencing token.</p>
<ul id="documents">
{{DOCUMENTS}}
</ul>
<h2>Activity</h2>
<p id="feed-state" class="hint">Log in to follow the activity feed.</p>
<p class="hint">The feed is the event bus: what users do here (logins,
pushes, requests, edits) and sessions that start and end
(<code>demo/*</code> and <code>session_ws/session/*</code>). After a
reconnection the client subscribes again from the last event it got: the
events it missed come first, marked <em>replayed</em>.</p>
<form id="say">
  <label for="said">Say something in the feed</label>
  <input id="said" maxlength="200" required autocomplete="off">
  <button type="submit">Say</button>
</form>
<ol id="feed"></ol>
<p>Open this page in a second tab: both tabs share one session, and what you
push in one shows in both. Reset or log out in either and the connections of
every tab close. Log in as another user in a second browser (or a private
window) and send requests between the two. You can also visit
<a href="/reset" target="_blank">/reset</a> or
<a href="/logout" target="_blank">/logout</a> directly.</p>
<script type="module">
import { connect, RejectedError, SessionLockScope, SessionState } from {{CLIENT}};

const $ = (id) => document.getElementById(id);
const NODE = $("node").textContent;
const MAX_PUSHES = 20;
const MAX_HANDLED = 20;
const ECHO = "demo/echo";
const ECHO_OPTIONS = { sessionProperties: ["$Principal"] };
const MEANINGS = {
  1001: "going away: the server is shutting down",
  1006: "connection lost",
  1008: "too many requests",
  1013: "this tab read too slowly",
};
let session = null;
let pressed = null;  // "login", "reset" or "logout": this tab's, since it connected
let me = null;  // {principal, roles} of this connection's login, or null
let echoing = null;  // {session, registration} of the path handler
let syncing = false;
let sends = 0;
// Shared documents: each one's edit lock, by the index of its row
const DOCUMENTS = {{DOCUMENT_NAMES}};
const EDIT = { scope: SessionLockScope.UNLOCK_ON_CONNECTION_LOSS };
const REFRESH_MS = 2000;  // lock_info of every document, while logged in
const docs = DOCUMENTS.map((name, index) => ({ name, index, ...idle() }));
const principals = new Map();  // a holder's handle -> its user, once asked
// Activity feed: the events of demo/* and session_ws/session/*
const FEED_TYPES = ["demo/*", "session_ws/session/*"];
const MAX_FEED = 30;
let feed = null;  // {session, subscription} of the activity feed
let feedResume = null;  // {since, epoch}: where the login's old session's feed stopped

function show(state, text) {
  $("state").className = state;
  $("state").textContent = text;
  document.title = text + " \\u2013 " + NODE;
}

function meaning(code, reason) {
  if (reason) return reason;
  if (code !== 1000) return MEANINGS[code] || "";
  // The server closes a session's connections with 1000 and no reason: only
  // the tab that pressed the button knows which one it was.
  return "closed by the server: " +
         (pressed ? pressed + " in this tab" : "login, logout or reset in another tab");
}

function why(current) {
  const text = meaning(current.closeCode, current.closeReason);
  return "code " + current.closeCode + (text ? " (" + text + ")" : "");
}

function forget() {
  for (const id of ["connection", "session", "connections", "user"]) {
    $(id).textContent = "\\u2013";
  }
}

async function countConnections(current) {
  try {
    const { count } = await current.request("connections");
    if (current === session) $("connections").textContent = count;
  } catch {
    // the connection dropped meanwhile: the state says so
  }
}

function changed(current, state) {
  if (current !== session) return;
  if (state === SessionState.CONNECTED) {
    pressed = null;
    show("open", "Connected");
    $("connection").textContent = current.connectionId;
    $("session").textContent = current.sessionId;
    $("reconnect").disabled = true;
    countConnections(current);
    if (me) {
      $("user").textContent = describeUser(me);
      showAnswering();
    }
    if (feed?.session === current) following();
    refreshDocuments();
  } else if (state === SessionState.RECONNECTING) {
    show("connecting", "Reconnecting\\u2026 the connection closed, " + why(current));
    forget();
    renderDocuments();
    if (feed?.session === current) {
      feedState("Reconnecting: the events meanwhile come once the connection " +
                "is back, marked replayed.");
    }
  } else if (state === SessionState.CLOSED) {
    show("closed", "Closed, " + why(current));
    forget();
    renderDocuments();
    $("answering").textContent = "Not connected: no requests reach this tab.";
    if (feed?.session === current) feedState("Not connected: the feed stopped.");
    if (pressed === "login") {
      feedResume = resumeOf(feed);  // the new session's feed goes on from there
      start();  // the login's new id: connect as the user
    } else {
      $("reconnect").disabled = false;
    }
  }
}

function describeUser(user) {
  return user.principal + " (roles " + user.roles.join(", ") + ")";
}

// Messaging: this tab answers requests on demo/echo, sent to the path
// (addRequestHandler) or to its session, by handle or by filter
// (addStreamHandler, addressed); the client registers them again after
// each reconnection.

function echo(value, context) {
  const from = context.sessionProperties.$Principal ?? context.sender ?? "server code";
  const to = context.addressed ? "this session" : "the path " + context.path;
  const item = document.createElement("li");
  item.textContent = from + " asked " + to + ": " + JSON.stringify(value);
  $("handled").prepend(item);
  while ($("handled").children.length > MAX_HANDLED) $("handled").lastChild.remove();
  if ($("refuse").checked) {
    throw new RejectedError(me.principal + " refuses requests");
  }
  return {
    echo: value, principal: me.principal, session: session.sessionId, node: NODE,
  };
}

function describe(value) {
  if (value !== null && typeof value === "object" && "echo" in value) {
    return value.principal + " on " + value.node + " echoed " +
           JSON.stringify(value.echo);
  }
  return JSON.stringify(value);
}

function failure(error) {
  const at = Number.isInteger(error.position)
    ? " (at character " + error.position + ")" : "";
  return "Error: " + error.message + at;
}

function showAnswering() {
  if (!me) {
    $("answering").textContent = "Log in to answer requests on " + ECHO + ".";
    return;
  }
  const path = echoing?.session === session ? "to the path " + ECHO + " and " : "";
  $("answering").textContent = "Answering requests sent " + path +
    "to this session on " + ECHO + ", as " + me.principal + ".";
}

async function setUpMessaging(current) {
  let properties;
  try {
    properties = await current.properties();
  } catch {
    return;  // the connection dropped meanwhile: a new start() follows
  }
  if (current !== session) return;
  const principal = properties.$Principal;
  const roles = [...(properties.$Roles ?? "").matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  me = principal ? { principal, roles } : null;
  $("user").textContent =
    me ? describeUser(me) : "nobody: log in to send and answer requests";
  refreshDocuments();
  follow(current);
  if (!me) {
    showAnswering();
    return;
  }
  try {
    const options = { addressed: true, ...ECHO_OPTIONS };
    await current.messaging.addStreamHandler(ECHO, echo, options);
  } catch (error) {
    $("answering").textContent = "Could not answer requests: " + error.message;
    return;
  }
  await syncEcho();
}

/** Register or close the path handler as the checkbox says. */
async function syncEcho() {
  if (syncing) return;
  syncing = true;
  try {
    for (;;) {
      const current = session;
      if (current === null || me === null) break;
      const have = echoing?.session === current;
      if ($("answer").checked === have) break;
      if (have) {
        const old = echoing;
        echoing = null;
        await old.registration.close();
      } else {
        const registration =
          await current.messaging.addRequestHandler(ECHO, echo, ECHO_OPTIONS);
        echoing = { session: current, registration };
      }
    }
    showAnswering();
  } catch (error) {
    $("answering").textContent =
      "Could not change the path's handler: " + error.message;
  } finally {
    syncing = false;
  }
}

async function send(event) {
  event.preventDefault();
  const mine = ++sends;
  const list = $("responses");
  list.replaceChildren();
  const line = (text) => {
    if (mine !== sends) return;  // a later send owns the list
    const item = document.createElement("li");
    item.textContent = text;
    list.append(item);
  };
  const current = session;
  const kind = $("kind").value;
  const path = $("path").value.trim();
  const target = $("target").value.trim();
  const message = $("message").value;
  if (current === null) {
    line("Error: not connected");
    return;
  }
  const messaging = current.messaging;
  if (me) tell(current, { what: "request", to: kind, path });
  try {
    if (kind === "path") {
      line("To the path " + path + ": " + JSON.stringify(message));
      line(describe(await messaging.sendRequestToPath(path, message)));
    } else if (kind === "session") {
      line("To session " + target + " on " + path + ": " + JSON.stringify(message));
      line(describe(await messaging.sendRequestToSession(path, target, message)));
    } else {
      line("To the filter " + target + " on " + path + ": " + JSON.stringify(message));
      const responses = await messaging.sendRequestToFilter(target, path, message);
      const plural = responses.expected === 1 ? "" : "s";
      line("Expected " + responses.expected + " response" + plural);
      for await (const response of responses) {
        const text =
          response.error ? failure(response.error) : describe(response.value);
        line(response.session + ": " + text);
      }
      const { unanswered } = await responses.done;
      line("Unanswered: " + (unanswered.length ? unanswered.join(", ") : "none"));
    }
  } catch (error) {
    line(failure(error));
  }
}

// Shared documents: Edit takes the document's session lock for this
// connection (UNLOCK_ON_CONNECTION_LOSS); the tab shows what lock_info says
// after each of its own lock events, and every REFRESH_MS.

function idle() {
  return { lock: null, waiting: null, info: null, note: "" };
}

function connected() {
  return session !== null && session.state === SessionState.CONNECTED;
}

async function edit(doc) {
  const current = session;
  if (!connected() || !me || doc.lock || doc.waiting) return;
  const waiting = new AbortController();
  doc.waiting = waiting;
  doc.note = "";
  renderDocument(doc);
  refreshDocument(doc);
  try {
    const lock = await current.lock(doc.name, { ...EDIT, signal: waiting.signal });
    if (current !== session) return;
    doc.lock = lock;
    tell(current, { what: "lock", name: doc.name });
    lock.onLost((reason) => {
      if (doc.lock !== lock) return;
      doc.lock = null;
      doc.note = "This tab lost the edit lock: " + reason + ".";
      refreshDocument(doc);
    });
  } catch (error) {
    if (current !== session) return;
    doc.note = error.name === "AbortError"
      ? "You stopped waiting."
      : "Could not edit: " + error.message;
  } finally {
    if (doc.waiting === waiting) doc.waiting = null;
  }
  refreshDocument(doc);
}

async function release(doc) {
  const lock = doc.lock;
  if (!lock) return;
  doc.lock = null;
  try {
    await lock.unlock();
    tell(session, { what: "unlock", name: doc.name });
    doc.note = "";
  } catch (error) {
    doc.note = "Could not release: " + error.message;
  }
  refreshDocument(doc);
}

function stopWaiting(doc) {
  doc.waiting?.abort();
}

/** Ask who holds the document's lock, and who waits; then show it. */
async function refreshDocument(doc) {
  const current = session;
  if (!connected() || !me) {
    renderDocument(doc);
    return;
  }
  try {
    const info = await current.lockInfo(doc.name);
    if (current !== session) return;
    doc.info = info;
    if (info.owner && info.owner !== current.sessionId) await principalOf(info.owner);
  } catch {
    // the connection dropped meanwhile: the state says so
  }
  renderDocument(doc);
}

function refreshDocuments() {
  for (const doc of docs) refreshDocument(doc);
}

function renderDocuments() {
  for (const doc of docs) renderDocument(doc);
}

/** Learn the holder's user once per handle (its session's property "user"). */
async function principalOf(handle) {
  if (principals.has(handle)) return;
  if (principals.size > 50) principals.clear();
  principals.set(handle, null);  // asked: not again
  try {
    const properties = await session.properties({ sessionId: handle });
    principals.set(handle, properties.user ?? null);  // the demo's /live sets it
  } catch {
    principals.delete(handle);  // the connection dropped: ask again later
  }
}

function holderName(handle, principal) {
  return principal ? principal + " (session " + handle + ")" : "session " + handle;
}

function queueText(info, waiting) {
  const place = info.queue.indexOf(session?.sessionId) + 1;
  if (waiting && place > 0) {
    return "You are number " + place + " of " + info.queue.length + " in line.";
  }
  const count = info.waiting;
  if (waiting) {
    if (count === 0) return "Joining the line\u2026";  // not queued yet
    return "Waiting in line: " + count + (count === 1 ? " session." : " sessions.");
  }
  return count === 0 ? "Nobody waits." : count + " waiting.";
}

/** Show a document's row: who edits it, who waits, and its buttons. */
function renderDocument(doc) {
  const state = $("doc-" + doc.index + "-state");
  const editButton = $("doc-" + doc.index + "-edit");
  const releaseButton = $("doc-" + doc.index + "-release");
  const row = $("doc-" + doc.index);
  const info = doc.info;
  const mine = session?.sessionId;
  let text;
  let editing = false;
  editButton.textContent = "Edit";
  editButton.hidden = false;
  editButton.disabled = false;
  releaseButton.hidden = true;
  if (doc.lock?.isOwned) {
    editing = true;
    text = "You are editing " + doc.name + " in this tab (fencing token " +
           doc.lock.sequence + ")." + (info ? " " + queueText(info, false) : "");
    editButton.hidden = true;
    releaseButton.hidden = false;
  } else if (!connected()) {
    text = "Not connected.";
    editButton.disabled = true;
  } else if (!me) {
    text = "Log in to edit.";
    editButton.disabled = true;
  } else if (doc.waiting) {
    const owner = info?.owner;
    const who = owner ? holderName(owner, principals.get(owner)) : "the holder";
    text = "Waiting for " + who + " to finish." +
           (info ? " " + queueText(info, true) : "");
    editButton.textContent = "Stop waiting";
  } else if (info?.owner && info.owner === mine) {
    text = "Your session edits it in another tab (fencing token " +
           info.sequence + ").";
    editButton.disabled = true;
  } else if (info?.owner) {
    const who = holderName(info.owner, principals.get(info.owner));
    text = "Being edited by " + who + ". " + queueText(info, false);
  } else {
    text = "Free: nobody edits it.";
  }
  if (doc.note) text += " " + doc.note;
  state.textContent = text;
  row.className = editing ? "editing" : "";
}

for (const doc of docs) {
  $("doc-" + doc.index + "-edit").onclick = () =>
    doc.waiting ? stopWaiting(doc) : edit(doc);
  $("doc-" + doc.index + "-release").onclick = () => release(doc);
}
setInterval(() => {
  if (connected() && me) refreshDocuments();
}, REFRESH_MS);

// Activity feed: the page subscribes once logged in; the client subscribes
// again after each reconnection from the last event it got, so the events
// missed meanwhile come first, marked replayed; if they could not all be
// replayed (the history was lost, or is older than its retention),
// onNotRecovered says so.

function feedState(text, lost = false) {
  $("feed-state").textContent = text;
  $("feed-state").className = lost ? "lost" : "hint";
}

function following() {
  feedState("Following the activity feed: " + FEED_TYPES.join(" and ") + ".");
}

/** Where a feed stopped, to go on from there: {since, epoch}, or null. */
function resumeOf(current) {
  const since = current?.subscription.lastId ?? current?.subscription.position;
  return since ? { since, epoch: current.subscription.epoch } : null;
}

async function follow(current) {
  const resume = feedResume;
  feedResume = null;
  if (!me) {
    feedState("Log in to follow the activity feed.");
    return;
  }
  let subscription;
  try {
    subscription = await current.events.subscribe(FEED_TYPES, {
      ...(resume ?? {}), onEvent: showEvent,
    });
  } catch (error) {
    feedState("Could not follow the activity feed: " + error.message, true);
    return;
  }
  if (current !== session) {
    subscription.close();
    return;
  }
  feed = { session: current, subscription };
  following();
  subscription.onNotRecovered((reason) => {
    if (feed?.subscription !== subscription) return;
    feedState("Some events were missed and could not be replayed (" + reason +
              "): the feed goes on with new ones.", true);
  });
}

/** The feed's line for an event. */
function describeEvent(event) {
  const payload = event.payload;
  const data = payload?.type === "json" ? payload.data : null;
  const d = data !== null && typeof data === "object" ? data : {};
  const who = d.user ?? "an anonymous session";
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  switch (event.type) {
    case "demo/login": return who + " logged in";
    case "demo/logout": return who + " logged out";
    case "demo/reset": return who + " reset the session ws id";
    case "demo/push":
      return who + " pushed to their session's tabs (" +
             plural(d.reached, "connection") + ")";
    case "demo/lock/granted":
      return who + " edits " + d.name + " (fencing token " + d.sequence + ")";
    case "demo/lock/released": return who + " released " + d.name;
    case "demo/messaging/request": {
      const to = { path: "the path", session: "a session on", filter: "a filter on" };
      return who + " sent a request to " + (to[d.to] ?? d.to) + " " + d.path;
    }
    case "demo/chat/message": return who + " says " + JSON.stringify(d.text);
    case "session_ws/session/started":
    case "session_ws/session/ended": {
      const what = event.type.endsWith("started") ? "started" : "ended";
      // the principal when the server knew it as the session started
      const whose = d.principal ? d.principal + "'s session " : "session ";
      return whose + d.session + " " + what;
    }
    default:
      return event.type + (data === null ? "" : " " + JSON.stringify(data));
  }
}

function showEvent(event) {
  const item = document.createElement("li");
  item.textContent = describeEvent(event) +
    (event.replayed ? " (replayed: missed while disconnected)" : "");
  item.className = event.replayed ? "replayed" : "";
  $("feed").prepend(item);
  while ($("feed").children.length > MAX_FEED) $("feed").lastChild.remove();
}

/** Tell the server what this tab's user did: the demo's op activity. */
function tell(current, args) {
  current?.request("activity", args).catch(() => {
    // not connected, or no longer the holder: no event, no harm
  });
}

async function say(event) {
  event.preventDefault();
  const current = session;
  const text = $("said").value.trim();
  if (!current || !me || !text) return;
  try {
    await current.events.register([{
      type: "demo/chat/message",
      payload: { type: "json", data: { user: me.principal, text } },
    }]);
    $("said").value = "";
  } catch (error) {
    feedState("Could not say it: " + error.message, true);
  }
}

function pushed(data) {
  if (data === null || typeof data !== "object") return;
  if (data.kind === "connections") {
    $("connections").textContent = data.count;
  } else if (data.kind === "text") {
    const item = document.createElement("li");
    item.textContent = data.text;
    $("pushes").prepend(item);
    while ($("pushes").children.length > MAX_PUSHES) $("pushes").lastChild.remove();
  }
}

async function start() {
  session = null;
  me = null;
  echoing = null;
  feed = null;
  for (const doc of docs) Object.assign(doc, idle());
  renderDocuments();
  $("reconnect").disabled = true;
  show("connecting", "Connecting\\u2026");
  let current;
  try {
    current = await connect("/live", { reconnect: true });
  } catch (error) {
    show("closed", "Could not connect: " + error.message);
    $("reconnect").disabled = false;
    return;
  }
  session = current;
  current.onPush(pushed);
  current.addStateListener((old, state) => changed(current, state));
  changed(current, SessionState.CONNECTED);
  await setUpMessaging(current);
}

async function post(path, body) {
  pressed = path.slice(1);
  try {
    const response = await fetch(path, { method: "POST", body });
    const text = await response.text();
    $("result").textContent = path + ": " + response.status + " " + text;
    if (!response.ok) pressed = null;
  } catch (error) {
    $("result").textContent = path + " failed: " + error;
    pressed = null;
  }
}

$("push").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = new URLSearchParams(new FormData(form));
  try {
    const response = await fetch("/push", { method: "POST", body });
    $("result").textContent = "/push: " + response.status + " " + await response.text();
    if (response.ok) form.reset();
  } catch (error) {
    $("result").textContent = "/push failed: " + error;
  }
});
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  post("/login", new URLSearchParams(new FormData(event.target)));
});
$("send").addEventListener("submit", send);
$("say").addEventListener("submit", say);
$("answer").addEventListener("change", syncEcho);
$("reset").onclick = () => post("/reset");
$("logout").onclick = () => post("/logout");
$("reconnect").onclick = start;
start();
</script>
</body>
</html>
"""
"""The page at ``/``: ``{{NODE}}``, ``{{BACKEND}}``, ``{{CLIENT}}``, ``{{USERS}}``,
``{{DOCUMENTS}}`` and ``{{DOCUMENT_NAMES}}`` to fill in."""

DOCUMENTS: tuple[str, ...] = ("docs/readme", "docs/plan", "docs/notes")
"""The shared documents of the page: each one's *Edit* button takes the
session lock of its name (the demo's policy allows the locks below ``docs/``)."""


def document_rows(documents: Sequence[str]) -> str:
    """The ``<li>`` of each shared document: its name, state and buttons."""
    return "\n".join(
        f'  <li id="doc-{index}"><code>{html.escape(name)}</code>\n'
        f'    <p class="doc-state" id="doc-{index}-state">&ndash;</p>\n'
        f'    <button id="doc-{index}-edit" disabled>Edit</button>\n'
        f'    <button id="doc-{index}-release" hidden>Release</button></li>'
        for index, name in enumerate(documents)
    )


def user_options(users: Mapping[str, Sequence[str]]) -> str:
    """The ``<option>`` of each user of the login form, with their roles."""
    return "\n".join(
        f'    <option value="{html.escape(name)}">'
        f"{html.escape(name)} ({html.escape(', '.join(roles))})</option>"
        for name, roles in users.items()
    )


def render_page(
    *,
    node: str,
    backend: str,
    client: str,
    users: Mapping[str, Sequence[str]] = USERS,
    documents: Sequence[str] = DOCUMENTS,
) -> str:
    """The page at ``/``: it names the node and backend, and opens ``/live``.

    :param client: the URL of the browser client, ``session-ws.js``; it goes
        into the script as a string literal.
    :param users: the names (and roles) the login form offers.
    :param documents: the names of the shared documents (lock names).
    """
    literal = json.dumps(client).replace("<", "\\u003c")  # no </script> in it
    names = json.dumps(list(documents)).replace("<", "\\u003c")
    return (
        INDEX_HTML.replace("{{NODE}}", html.escape(node))
        .replace("{{BACKEND}}", html.escape(backend))
        .replace("{{USERS}}", user_options(users))
        .replace("{{DOCUMENTS}}", document_rows(documents))
        .replace("{{DOCUMENT_NAMES}}", names)
        .replace("{{CLIENT}}", literal)
    )
