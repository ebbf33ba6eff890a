"""The demo's page: HTML and a module script on the browser client, no build step."""

from __future__ import annotations

import html
import json

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
  code, #session, #connection, #node, #backend, #pushes li {
    overflow-wrap: anywhere; word-break: break-all; }
  #result { color: #444; min-height: 1.5em; overflow-wrap: anywhere; }
  form { display: flex; flex-wrap: wrap; gap: .3rem; align-items: center; }
  form label { flex: 1 0 100%; font-weight: bold; }
  form input { flex: 1 1 10rem; min-width: 0; font: inherit; padding: .3rem; }
  #pushes { padding-left: 1.5rem; }
  button { font: inherit; padding: .3rem .8rem; margin: 0 .3rem .3rem 0; }
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
</dl>
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
<p>Open this page in a second tab: both tabs share one session, and what you
push in one shows in both. Reset or log out in either and the connections of
every tab close. You can also visit
<a href="/reset" target="_blank">/reset</a> or
<a href="/logout" target="_blank">/logout</a> directly.</p>
<script type="module">
import { connect, SessionState } from {{CLIENT}};

const $ = (id) => document.getElementById(id);
const NODE = $("node").textContent;
const MAX_PUSHES = 20;
const MEANINGS = {
  1001: "going away: the server is shutting down",
  1006: "connection lost",
  1008: "too many requests",
  1013: "this tab read too slowly",
};
let session = null;
let pressed = null;  // "reset" or "logout": this tab's button, since it connected

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
         (pressed ? pressed + " in this tab" : "logout or reset in another tab");
}

function why(current) {
  const text = meaning(current.closeCode, current.closeReason);
  return "code " + current.closeCode + (text ? " (" + text + ")" : "");
}

function forget() {
  for (const id of ["connection", "session", "connections"]) {
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
  } else if (state === SessionState.RECONNECTING) {
    show("connecting", "Reconnecting\\u2026 the connection closed, " + why(current));
    forget();
  } else if (state === SessionState.CLOSED) {
    show("closed", "Closed, " + why(current));
    forget();
    $("reconnect").disabled = false;
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
}

async function post(path) {
  pressed = path.slice(1);
  try {
    const response = await fetch(path, { method: "POST" });
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
$("reset").onclick = () => post("/reset");
$("logout").onclick = () => post("/logout");
$("reconnect").onclick = start;
start();
</script>
</body>
</html>
"""
"""The page at ``/``: ``{{NODE}}``, ``{{BACKEND}}``, ``{{CLIENT}}`` to fill in."""


def render_page(*, node: str, backend: str, client: str) -> str:
    """The page at ``/``: it names the node and backend, and opens ``/live``.

    :param client: the URL of the browser client, ``session-ws.js``; it goes
        into the script as a string literal.
    """
    literal = json.dumps(client).replace("<", "\\u003c")  # no </script> in it
    return (
        INDEX_HTML.replace("{{NODE}}", html.escape(node))
        .replace("{{BACKEND}}", html.escape(backend))
        .replace("{{CLIENT}}", literal)
    )
