// The bmdemo dashboard: follows /events (Server-Sent Events) and renders machines as tiles, the
// recent operations, and the log of the operation the user clicked. Served as is (no build
// step). State changes only mark what is dirty; one requestAnimationFrame per frame renders
// them, so a burst over 1,000 machines costs one layout per frame, not one per event.

const STATES = ["NEW", "IDLE", "BUSY", "MAINTENANCE", "ATTENTION", "BLOCKED"];
const MAX_OPERATIONS = 50;
const MAX_LOG_LINES = 2000;
const MAX_HISTORY = 64;

/** @type {Map<string, any>} */
const machines = new Map();
/** @type {Map<string, any>} operations by id, in creation order */
const operations = new Map();
/** @type {Map<string, string[]>} event messages seen per operation */
const history = new Map();
/** @type {Map<string, HTMLElement>} */
const tiles = new Map();
/** The parts of each tile, found once. */
const tileParts = new WeakMap();
const dirtyTiles = new Set();
let operationsDirty = false;
let countsDirty = false;
let rebuild = false;
let frame = 0;
let clockOffset = 0;

const el = (id) => document.getElementById(id);
const machinesEl = el("machines");
const operationsEl = el("operations");
const countsEl = el("counts");
const connectionEl = el("connection");
const logEl = el("log");
const logTitleEl = el("log-title");

function schedule() {
  if (frame === 0) frame = requestAnimationFrame(render);
}

function shortId(id) {
  return id.startsWith("op-") ? id.slice(0, 11) : id;
}

function elapsed(op) {
  const from = op.startedAt || op.createdAt;
  if (!from) return "";
  const end = op.finishedAt || Date.now() + clockOffset;
  const seconds = Math.max(0, Math.round((end - from) / 1000));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function stepText(op) {
  if (!op) return "";
  if (op.step > 0) return `${op.step}/${op.steps} ${op.stage}`;
  return op.stage || op.type.toLowerCase().replaceAll("_", "-");
}

function setMachine(machine) {
  machines.set(machine.id, machine);
  dirtyTiles.add(machine.id);
  countsDirty = true;
}

function setOperation(op, message) {
  const known = operations.has(op.id);
  operations.set(op.id, op);
  if (!known && operations.size > MAX_OPERATIONS) forgetFinished();
  if (message) {
    const seen = history.get(op.id) ?? [];
    seen.push(message);
    if (seen.length > MAX_HISTORY) seen.shift();
    history.set(op.id, seen);
  }
  operationsDirty = true;
  const machine = machines.get(op.machineId);
  if (machine) dirtyTiles.add(machine.id);
}

const ACTIVE = new Set(["PENDING", "RUNNING"]);

/** Forgets the oldest finished operations beyond the list's length; active ones stay (tiles). */
function forgetFinished() {
  for (const [id, op] of operations) {
    if (operations.size <= MAX_OPERATIONS) return;
    if (ACTIVE.has(op.phase)) continue;
    operations.delete(id);
    history.delete(id);
  }
}

function applySnapshot(data) {
  machines.clear();
  operations.clear();
  for (const machine of data.machines) machines.set(machine.id, machine);
  for (const op of data.operations) operations.set(op.id, op);
  for (const id of [...history.keys()]) if (!operations.has(id)) history.delete(id);
  rebuild = true;
  operationsDirty = true;
  countsDirty = true;
  schedule();
}

function newTile(id) {
  const tile = document.createElement("article");
  tile.className = "tile";
  tile.tabIndex = 0;
  tile.dataset.machineId = id;
  const parts = {};
  for (const name of ["id", "state", "phase", "flags", "step"]) {
    const part = document.createElement("div");
    part.className = name;
    tile.append(part);
    parts[name] = part;
  }
  parts.id.textContent = id;
  tileParts.set(tile, parts);
  return tile;
}

/** Writes a text only when it changed: an unchanged tile costs no style or layout work. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderTile(tile, machine) {
  const parts = tileParts.get(tile);
  if (tile.dataset.effectiveState !== machine.state) tile.dataset.effectiveState = machine.state;
  setText(parts.state, machine.state);
  setText(parts.phase, machine.phase.replace("_", " "));
  const flags = `${machine.reachable ? "✓" : "✗"}${machine.provisioned ? "✓" : "✗"}`;
  if (parts.flags.dataset.flags !== flags) {
    parts.flags.dataset.flags = flags;
    const flag = (on, name) => {
      const span = document.createElement("span");
      if (on) span.className = "on";
      span.textContent = `${on ? "✓" : "✗"} ${name}`;
      return span;
    };
    parts.flags.replaceChildren(
      flag(machine.reachable, "Reachable"),
      " ",
      flag(machine.provisioned, "Provisioned"),
    );
  }
  const op = machine.activeOperationId ? operations.get(machine.activeOperationId) : undefined;
  setText(parts.step, op ? `${stepText(op)} · ${elapsed(op)}` : "");
  const title = op ? `${op.type} ${op.id}` : machine.id;
  if (tile.title !== title) tile.title = title;
}

function renderTiles() {
  if (rebuild) {
    rebuild = false;
    tiles.clear();
    dirtyTiles.clear();
    const fragment = document.createDocumentFragment();
    for (const machine of machines.values()) {
      const tile = newTile(machine.id);
      renderTile(tile, machine);
      tiles.set(machine.id, tile);
      fragment.append(tile);
    }
    machinesEl.replaceChildren(fragment);
    if (machines.size === 0) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "No machines yet: register some (bmdemo-cli import).";
      machinesEl.append(empty);
    }
    return;
  }
  for (const id of dirtyTiles) {
    const machine = machines.get(id);
    let tile = tiles.get(id);
    if (!tile) {
      machinesEl.querySelector(".empty")?.remove();
      tile = newTile(id);
      tiles.set(id, tile);
      machinesEl.append(tile);
    }
    renderTile(tile, machine);
  }
  dirtyTiles.clear();
}

function renderOperations() {
  const fragment = document.createDocumentFragment();
  for (const op of [...operations.values()].reverse().slice(0, MAX_OPERATIONS)) {
    const row = document.createElement("li");
    row.tabIndex = 0;
    row.dataset.operationId = op.id;
    row.dataset.phase = op.phase;
    row.dataset.history = (history.get(op.id) ?? []).join("|");
    row.setAttribute("aria-selected", String(op.id === logEl.dataset.operationId));
    const id = document.createElement("span");
    id.textContent = shortId(op.id);
    const what = document.createElement("span");
    what.textContent = `${op.machineId} ${op.type.toLowerCase().replaceAll("_", "-")}${
      op.phase === "RUNNING" ? ` ${stepText(op)}` : ""
    }`;
    const phase = document.createElement("span");
    phase.className = "phase";
    phase.textContent = op.phase;
    row.title = op.error || op.id;
    row.append(id, what, phase);
    fragment.append(row);
  }
  operationsEl.replaceChildren(fragment);
}

function renderCounts() {
  const counts = Object.fromEntries(STATES.map((state) => [state, 0]));
  for (const machine of machines.values()) counts[machine.state] = (counts[machine.state] ?? 0) + 1;
  const fragment = document.createDocumentFragment();
  for (const state of STATES) {
    if (counts[state] === 0) continue;
    const item = document.createElement("li");
    item.dataset.effectiveState = state;
    item.textContent = `${counts[state]} ${state}`;
    fragment.append(item);
  }
  countsEl.replaceChildren(fragment);
}

function render() {
  frame = 0;
  renderTiles();
  if (operationsDirty) {
    operationsDirty = false;
    renderOperations();
  }
  if (countsDirty) {
    countsDirty = false;
    renderCounts();
  }
}

// Elapsed times move once a second, for busy machines only.
setInterval(() => {
  let any = false;
  for (const machine of machines.values()) {
    if (machine.activeOperationId) {
      dirtyTiles.add(machine.id);
      any = true;
    }
  }
  if (any) schedule();
}, 1000);

// --- the change feed ---------------------------------------------------------------------

let source;
let snapshots = 0;
let reconnects = 0;

function setConnection(state, label) {
  connectionEl.dataset.state = state;
  connectionEl.dataset.snapshots = String(snapshots);
  connectionEl.dataset.reconnects = String(reconnects);
  connectionEl.textContent = label;
}

const SIGNED_OUT = "signed out: open the sign-in link printed by the server";

/** Whether the server refuses this browser's sign-in (401); `false` when it cannot be reached. */
async function signedOut() {
  try {
    const response = await fetch("/events", { method: "HEAD", cache: "no-store" });
    return response.status === 401;
  } catch {
    return false;
  }
}

function connect() {
  source = new EventSource("/events");
  source.addEventListener("open", () => setConnection("live", "live"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (401, 503): the browser gives up, so try again later with a fresh stream.
      // EventSource hides the status, so a HEAD on the same route (no stream) tells a sign-in
      // that is no longer valid (a server restarted with another token) from an outage.
      const refused = source;
      signedOut().then((out) => {
        if (source !== refused) return;
        if (out) setConnection("signed-out", SIGNED_OUT);
        else setConnection("offline", "offline: retrying");
        setTimeout(connect, 3000);
      });
    } else {
      reconnects++;
      setConnection("reconnecting", "reconnecting");
    }
  });
  source.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    clockOffset = data.serverTime - Date.now();
    snapshots++;
    applySnapshot(data);
    setConnection("live", "live");
  });
  source.addEventListener("machine", (event) => {
    const data = JSON.parse(event.data);
    setMachine(data.machine);
    schedule();
  });
  source.addEventListener("operation", (event) => {
    const data = JSON.parse(event.data);
    clockOffset = data.serverTime - Date.now();
    setOperation(data.operation, data.message);
    if (data.machine) setMachine(data.machine);
    schedule();
  });
}

// --- the log pane ------------------------------------------------------------------------

let logSource;
let logLines = 0;

function appendLog(text, className) {
  const line = document.createElement("span");
  if (className) line.className = className;
  line.textContent = `${text}\n`;
  logEl.append(line);
  if (++logLines > MAX_LOG_LINES) {
    logEl.firstChild?.remove();
    logLines--;
  }
  logEl.scrollTop = logEl.scrollHeight;
}

function follow(operationId) {
  logSource?.close();
  logEl.replaceChildren();
  logLines = 0;
  logEl.dataset.operationId = operationId;
  logEl.dataset.state = "following";
  logTitleEl.textContent = `Log: ${shortId(operationId)}`;
  operationsDirty = true;
  schedule();
  const stream = new EventSource(`/operations/${encodeURIComponent(operationId)}/logs`);
  logSource = stream;
  stream.addEventListener("log", (event) => {
    const data = JSON.parse(event.data);
    appendLog(data.text, data.stream === "stderr" ? "stderr" : "");
  });
  stream.addEventListener("end", (event) => {
    const data = JSON.parse(event.data);
    // The log is complete: without close() the browser would reconnect and ask again.
    stream.close();
    logEl.dataset.state = "ended";
    const phase = data.operation?.phase ?? "ended";
    logEl.dataset.phase = phase;
    appendLog(`— ${phase} —`, "end");
  });
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED && logEl.dataset.state === "following") {
      logEl.dataset.state = "unavailable";
      appendLog("— log unavailable (operation pruned, or the server refused) —", "end");
    }
  });
}

function followFrom(target) {
  const row = target.closest("[data-operation-id]");
  if (row) return follow(row.dataset.operationId);
  const tile = target.closest("[data-machine-id]");
  if (!tile) return;
  const machine = machines.get(tile.dataset.machineId);
  let id = machine?.activeOperationId;
  if (!id) {
    for (const op of operations.values()) if (op.machineId === tile.dataset.machineId) id = op.id;
  }
  if (id) follow(id);
}

for (const container of [machinesEl, operationsEl]) {
  container.addEventListener("click", (event) => followFrom(event.target));
  container.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      followFrom(event.target);
    }
  });
}

connect();
