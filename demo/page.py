"""The demo's page: plain HTML with inline JavaScript, no build step."""

INDEX_HTML = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aiohttp-session-ws demo</title>
<link rel="icon" href="data:,">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem;
         margin: 2rem auto; padding: 0 1rem; color: #222; }
  #state { padding: .6rem 1rem; border-radius: .4rem; font-weight: bold;
           font-size: 1.2rem; }
  .connecting { background: #eee; color: #444; }
  .open { background: #d9f5df; color: #11602a; }
  .closed { background: #fbd9d9; color: #8a1111; border: 2px solid #8a1111; }
  dl { display: grid; grid-template-columns: max-content auto; gap: .3rem 1rem; }
  dt { font-weight: bold; }
  dd { margin: 0; }
  code { word-break: break-all; }
  #result { color: #444; min-height: 1.5em; }
</style>
</head>
<body>
<h1>aiohttp-session-ws demo</h1>
<p id="state" class="connecting">Connecting&hellip;</p>
<dl>
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
const MEANINGS = {
  1000: "closed by the server: reset or logout",
  1001: "going away: the server is shutting down",
  1006: "connection lost",
};
let socket = null;

function show(state, text) {
  $("state").className = state;
  $("state").textContent = text;
  document.title = text + " \\u2013 aiohttp-session-ws demo";
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  socket = ws;
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
    const meaning = MEANINGS[event.code] || event.reason || "";
    show("closed", "Socket closed, code " + event.code +
         (meaning ? " (" + meaning + ")" : ""));
    $("connections").textContent = "\\u2013";
    $("tick").textContent = "\\u2013";
    $("reconnect").disabled = false;
  };
}

async function post(path) {
  try {
    const response = await fetch(path, {method: "POST"});
    const text = await response.text();
    $("result").textContent = path + ": " + response.status + " " + text;
  } catch (error) {
    $("result").textContent = path + " failed: " + error;
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
"""The page at ``/``: it opens a websocket to ``/ws`` and shows what comes."""
