"""The demo's page: plain HTML with inline JavaScript, no build step."""

from __future__ import annotations

import html

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
  /* labels wrap within 15rem, so the value column keeps room for the id */
  dl { display: grid; grid-template-columns: minmax(0, 15rem) minmax(0, 1fr);
       gap: .3rem 1rem; }
  dt { font-weight: bold; }
  dd { margin: 0; min-width: 0; }
  code, #session, #node, #backend { overflow-wrap: anywhere; word-break: break-all; }
  #result { color: #444; min-height: 1.5em; overflow-wrap: anywhere; }
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
  <dt>Session ws id</dt><dd><code id="session">&ndash;</code></dd>
  <dt>Open websockets of this session, on every node</dt>
  <dd id="connections">&ndash;</dd>
  <dt>Tick</dt><dd id="tick">&ndash;</dd>
</dl>
<p>
  <button id="reset">Reset ws id</button>
  <button id="logout">Log out</button>
  <button id="reconnect" disabled>Reconnect</button>
</p>
<p id="result"></p>
<p>Open this page in a second tab: both tabs share one session. Reset or log out
in either and the sockets of every tab close. You can also visit
<a href="/reset" target="_blank">/reset</a> or
<a href="/logout" target="_blank">/logout</a> directly.</p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const NODE = $("node").textContent;
const MEANINGS = {
  1001: "going away: the server is shutting down",
  1006: "connection lost",
};
let socket = null;
let pressed = null;  // "reset" or "logout": this tab's button, since the socket opened

function show(state, text) {
  $("state").className = state;
  $("state").textContent = text;
  document.title = text + " \\u2013 " + NODE;
}

function meaning(event) {
  if (event.reason) return event.reason;
  if (event.code !== 1000) return MEANINGS[event.code] || "";
  // The server closes a session's sockets with 1000 and no reason: only the
  // tab that pressed the button knows which one it was.
  return "closed by the server: " +
         (pressed ? pressed + " in this tab" : "logout or reset in another tab");
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  socket = ws;
  pressed = null;
  $("reconnect").disabled = true;
  show("connecting", "Connecting\\u2026");
  ws.onopen = () => show("open", "Socket open");
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if ("session" in data) $("session").textContent = data.session;
    if ("tick" in data) $("tick").textContent = data.tick;
    $("connections").textContent = data.connections;
  };
  ws.onclose = (event) => {
    if (ws !== socket) return;
    const text = meaning(event);
    show("closed", "Socket closed, code " + event.code +
         (text ? " (" + text + ")" : ""));
    $("connections").textContent = "\\u2013";
    $("tick").textContent = "\\u2013";
    $("reconnect").disabled = false;
  };
}

async function post(path) {
  pressed = path.slice(1);
  try {
    const response = await fetch(path, {method: "POST"});
    const text = await response.text();
    $("result").textContent = path + ": " + response.status + " " + text;
    if (!response.ok) pressed = null;
  } catch (error) {
    $("result").textContent = path + " failed: " + error;
    pressed = null;
  }
}

$("reset").onclick = () => post("/reset");
$("logout").onclick = () => post("/logout");
$("reconnect").onclick = connect;
connect();
</script>
</body>
</html>
"""
"""The page at ``/``, with ``{{NODE}}`` and ``{{BACKEND}}`` still to fill in."""


def render_page(*, node: str, backend: str) -> str:
    """The page at ``/``: it names the node and backend, and opens ``/ws``."""
    return INDEX_HTML.replace("{{NODE}}", html.escape(node)).replace(
        "{{BACKEND}}", html.escape(backend)
    )
