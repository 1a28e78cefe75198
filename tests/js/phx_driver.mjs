#!/usr/bin/env node
// Scriptable phoenix.js client for ackvisor's end-to-end tests.
//
// Drives the UNMODIFIED phoenix.js client (npm `phoenix` 1.8.x, or 1.7.x through
// the `phoenix17` alias) under Node with the `ws` package as WebSocket transport.
//
//   node tests/js/phx_driver.mjs --url ws://127.0.0.1:PORT/socket
//        [--phoenix 1.8|1.7] [--params JSON] [--auth-token TOK]
//        [--reconnect-ms N[,N...]] [--rejoin-ms N[,N...]]
//        [--heartbeat-ms N] [--timeout-ms N] [--raw] [--log] [--ack-filter]
//
// Timing flags map to the Socket options reconnectAfterMs / rejoinAfterMs /
// heartbeatIntervalMs / timeout; when a flag is absent the option is not passed
// at all, so phoenix.js uses its own defaults. --ack-filter installs a transport
// subclass that can lose outbound message_ack frames (`drop_acks` command). A comma-separated list is a
// schedule indexed by `tries` (the last value repeats).
//
// Protocol with the test process: stdin takes one JSON command per line, stdout
// emits one JSON event per line (see tests/phoenix_js.py for the full list).
// Nothing else is ever written to stdout; diagnostics go to stderr.
//
// `reliable_join` wraps the channel with clients/js/reliable.mjs (ackvisor's
// resume helper) instead of the driver's own ack logic.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { parseArgs } from "node:util";

// ---------------------------------------------------------------------------
// output

function jsonReplacer(key, value) {
  const original = this[key];
  if (original instanceof ArrayBuffer) {
    return { $binary_base64: Buffer.from(original).toString("base64") };
  }
  if (ArrayBuffer.isView(original)) {
    const bytes = Buffer.from(original.buffer, original.byteOffset, original.byteLength);
    return { $binary_base64: bytes.toString("base64") };
  }
  if (original instanceof Error) {
    return { name: original.name, message: original.message };
  }
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "function") return undefined;
  return value;
}

function emit(event) {
  let line;
  try {
    line = JSON.stringify(event, jsonReplacer);
  } catch (err) {
    line = JSON.stringify({
      type: "driver_error",
      message: `could not serialize event of type ${event && event.type}: ${err.message}`,
    });
  }
  // process.stdout is synchronous for pipes and files on Linux, so every line
  // is flushed as soon as write() returns (and before any process.exit()).
  process.stdout.write(line + "\n");
}

function driverError(message, extra = {}) {
  emit({ type: "driver_error", message: String(message), ...extra });
}

function errorFields(err) {
  if (err instanceof Error) return { message: err.message, stack: err.stack };
  return { message: String(err) };
}

process.stdout.on("error", (err) => {
  // The test process went away (EPIPE); nothing left to report to.
  process.stderr.write(`phx_driver: stdout error ${err && err.code}\n`);
  process.exit(0);
});
process.on("uncaughtException", (err) => {
  driverError("uncaught exception", errorFields(err));
});
process.on("unhandledRejection", (err) => {
  driverError("unhandled rejection", errorFields(err));
});

// ---------------------------------------------------------------------------
// arguments

function parseSchedule(flag, text) {
  if (text === undefined) return undefined;
  const values = String(text).split(",").map((part) => Number(part.trim()));
  if (values.length === 0 || values.some((v) => !Number.isFinite(v) || v < 0)) {
    throw new Error(`${flag} expects a number or comma-separated numbers, got ${JSON.stringify(text)}`);
  }
  return values;
}

function parseNumber(flag, text) {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${flag} expects a positive number, got ${JSON.stringify(text)}`);
  }
  return value;
}

let args;
try {
  const { values } = parseArgs({
    options: {
      url: { type: "string" },
      phoenix: { type: "string", default: "1.8" },
      params: { type: "string" },
      "auth-token": { type: "string" },
      "reconnect-ms": { type: "string" },
      "rejoin-ms": { type: "string" },
      "heartbeat-ms": { type: "string" },
      "timeout-ms": { type: "string" },
      raw: { type: "boolean", default: false },
      log: { type: "boolean", default: false },
      "ack-filter": { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (!values.url) throw new Error("--url is required");
  if (!["1.8", "1.7"].includes(values.phoenix)) {
    throw new Error(`--phoenix must be 1.8 or 1.7, got ${JSON.stringify(values.phoenix)}`);
  }
  let socketParams = {};
  if (values.params !== undefined) {
    socketParams = JSON.parse(values.params);
    if (socketParams === null || typeof socketParams !== "object" || Array.isArray(socketParams)) {
      throw new Error("--params must be a JSON object");
    }
  }
  args = {
    url: values.url,
    phoenix: values.phoenix,
    params: socketParams,
    authToken: values["auth-token"],
    reconnect: parseSchedule("--reconnect-ms", values["reconnect-ms"]),
    rejoin: parseSchedule("--rejoin-ms", values["rejoin-ms"]),
    heartbeatMs: parseNumber("--heartbeat-ms", values["heartbeat-ms"]),
    timeoutMs: parseNumber("--timeout-ms", values["timeout-ms"]),
    raw: values.raw,
    log: values.log,
    ackFilter: values["ack-filter"],
  };
} catch (err) {
  driverError(`bad arguments: ${err.message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// phoenix.js + ws

const PACKAGE = args.phoenix === "1.7" ? "phoenix17" : "phoenix";
const require = createRequire(import.meta.url);
const { Socket } = await import(PACKAGE);
const { WebSocket } = await import("ws");
const { reliableChannel } = await import("../../clients/js/reliable.mjs");

// <pkg>/priv/static/phoenix.cjs.js -> <pkg>/package.json ("./package.json" is
// not in the package's export map, so resolve the entry point and walk up).
const phoenixVersion = JSON.parse(
  readFileSync(path.join(path.dirname(require.resolve(PACKAGE)), "..", "..", "package.json"), "utf8"),
).version;
const wsVersion = JSON.parse(
  readFileSync(path.join(path.dirname(require.resolve("ws")), "package.json"), "utf8"),
).version;

// With --raw, outbound frames are reported too. phoenix.js itself stays
// untouched: only the transport class handed to it is a thin ws subclass.
class TracingWebSocket extends WebSocket {
  send(data, ...rest) {
    emit({ type: "raw_out", data: typeof data === "string" ? data : Buffer.from(data) });
    return super.send(data, ...rest);
  }
}

// `drop_acks` makes the network lose every outbound message_ack frame (the
// client believes it acked), so the server's ack deadline passes. Only when
// that command is used is this subclass installed (see `transportClass`).
let dropAcks = false;
let droppedAcks = 0;
class AckDroppingWebSocket extends WebSocket {
  send(data, ...rest) {
    if (dropAcks && typeof data === "string" && data.includes('"message_ack"')) {
      droppedAcks += 1;
      return undefined;
    }
    if (args.raw) emit({ type: "raw_out", data: typeof data === "string" ? data : Buffer.from(data) });
    return super.send(data, ...rest);
  }
}

let socketParams = args.params;
const socketOpts = {
  transport: args.ackFilter ? AckDroppingWebSocket : args.raw ? TracingWebSocket : WebSocket,
  // a function: phoenix.js re-evaluates it on every (re)connect
  params: () => socketParams,
};
if (args.authToken !== undefined) socketOpts.authToken = args.authToken;
if (args.reconnect) {
  const schedule = args.reconnect;
  socketOpts.reconnectAfterMs = (tries) => schedule[Math.min(tries, schedule.length) - 1];
}
if (args.rejoin) {
  const schedule = args.rejoin;
  socketOpts.rejoinAfterMs = (tries) => schedule[Math.min(tries, schedule.length) - 1];
}
if (args.heartbeatMs !== undefined) socketOpts.heartbeatIntervalMs = args.heartbeatMs;
if (args.timeoutMs !== undefined) socketOpts.timeout = args.timeoutMs;
if (args.log) {
  socketOpts.logger = (kind, msg, data) => emit({ type: "log", kind, msg, data: loggable(data) });
}

function loggable(data) {
  if (data && typeof data === "object" && typeof data.type === "string" && "target" in data) {
    // a DOM-style event from ws (close/error): keep the interesting fields only
    return { type: data.type, code: data.code, reason: data.reason, message: data.message };
  }
  return data;
}

const socket = new Socket(args.url, socketOpts);

socket.onOpen(() => emit({ type: "socket_open" }));
socket.onClose((event) =>
  emit({
    type: "socket_close",
    code: event && event.code,
    reason: event && event.reason,
    was_clean: event && event.wasClean,
  }),
);
socket.onError((error) =>
  emit({ type: "socket_error", message: (error && (error.message || (error.error && error.error.message))) || null }),
);
socket.onMessage((msg) => {
  if (args.raw) emit({ type: "raw_in", data: msg });
  if (msg.topic === "phoenix" && msg.event === "phx_reply") {
    emit({
      type: "heartbeat_reply",
      ref: msg.ref,
      status: msg.payload && msg.payload.status,
    });
  }
});

// ---------------------------------------------------------------------------
// channels

/** topic -> {channel, params, ack}; a later join on the same topic replaces the entry. */
const channels = new Map();

function entryFor(cmd) {
  if (typeof cmd.topic !== "string") throw new Error(`${cmd.cmd}: "topic" must be a string`);
  const entry = channels.get(cmd.topic);
  if (!entry) throw new Error(`${cmd.cmd}: no channel for topic ${JSON.stringify(cmd.topic)} (join it first)`);
  return entry;
}

function checkAckMode(ack) {
  if (ack !== "auto" && ack !== "none") throw new Error(`ack must be "auto" or "none", got ${JSON.stringify(ack)}`);
  return ack;
}

function sendAck(entry, messageId, mode) {
  const { channel } = entry;
  const push = channel.push("message_ack", { message_id: messageId, status: "Received" });
  emit({ type: "ack_sent", topic: channel.topic, message_id: messageId, join_ref: channel.joinRef(), mode });
  for (const status of ["ok", "error", "timeout"]) {
    push.receive(status, (response) =>
      emit({ type: "ack_reply", topic: channel.topic, message_id: messageId, status, response }),
    );
  }
}

function join(cmd) {
  if (typeof cmd.topic !== "string") throw new Error('join: "topic" must be a string');
  const entry = {
    params: cmd.params || {},
    ack: checkAckMode(cmd.ack || "auto"),
    channel: null,
  };
  // The params FUNCTION is what phoenix.js evaluates for every (re)join push,
  // so `set_params` changes what the next rejoin sends.
  const channel = socket.channel(cmd.topic, () => {
    emit({ type: "join_attempt", topic: channel.topic, join_ref: channel.joinRef(), params: entry.params });
    return entry.params;
  });
  entry.channel = channel;
  channels.set(cmd.topic, entry);

  channel.onMessage = (event, payload, ref, joinRef) => {
    try {
      onChannelMessage(entry, event, payload, ref, joinRef);
    } catch (err) {
      driverError(`error while handling ${event} on ${channel.topic}`, errorFields(err));
    }
    return payload; // phoenix.js requires the (possibly modified) payload back
  };

  const timeout = cmd.timeout_ms;
  const joinPush = timeout === undefined ? channel.join() : channel.join(timeout);
  joinPush
    .receive("ok", (response) => emit({ type: "join_ok", topic: channel.topic, join_ref: channel.joinRef(), response }))
    .receive("error", (response) =>
      emit({ type: "join_error", topic: channel.topic, join_ref: channel.joinRef(), response }),
    )
    .receive("timeout", () => emit({ type: "join_timeout", topic: channel.topic, join_ref: channel.joinRef() }));
}

function reliableJoin(cmd) {
  if (typeof cmd.topic !== "string") throw new Error('reliable_join: "topic" must be a string');
  const entry = { params: cmd.params || {}, ack: "none", channel: null, reliable: null };
  const rc = reliableChannel(socket, cmd.topic, { params: () => entry.params, ack: cmd.ack || "each" });
  const channel = rc.channel;
  entry.channel = channel;
  entry.reliable = rc;
  channels.set(cmd.topic, entry);
  // what phoenix.js actually sends on each (re)join (the helper adds `resume`)
  const payloadFn = channel.joinPush.payload;
  channel.joinPush.payload = () => {
    const params = payloadFn();
    emit({ type: "join_attempt", topic: channel.topic, join_ref: channel.joinRef(), params });
    return params;
  };
  const helperOnMessage = channel.onMessage;
  channel.onMessage = (event, payload, ref, joinRef) => {
    const handled = helperOnMessage(event, payload, ref, joinRef);
    try {
      if (!cmd.quiet || event === "phx_error" || event === "phx_close") onChannelMessage(entry, event, handled, ref, joinRef);
    } catch (err) {
      driverError(`error while handling ${event} on ${channel.topic}`, errorFields(err));
    }
    return handled;
  };
  for (const event of cmd.events || []) {
    rc.on(event, (payload) => emit({ type: "reliable_message", topic: channel.topic, event, payload }));
  }
  const joinPush = cmd.timeout_ms === undefined ? rc.join() : rc.join(cmd.timeout_ms);
  joinPush
    .receive("ok", (response) => emit({ type: "join_ok", topic: channel.topic, join_ref: channel.joinRef(), response }))
    .receive("error", (response) =>
      emit({ type: "join_error", topic: channel.topic, join_ref: channel.joinRef(), response }),
    )
    .receive("timeout", () => emit({ type: "join_timeout", topic: channel.topic, join_ref: channel.joinRef() }));
}

function onChannelMessage(entry, event, payload, ref, joinRef) {
  const { channel } = entry;
  const topic = channel.topic;
  const wireJoinRef = joinRef === undefined ? null : joinRef;
  if (event.startsWith("chan_reply_")) return; // internal re-dispatch of phx_reply
  if (event === "phx_reply") {
    emit({
      type: "reply",
      topic,
      ref: ref === undefined ? null : ref,
      join_ref: wireJoinRef,
      status: payload && payload.status,
      response: payload && payload.response,
    });
    return;
  }
  if (event === "phx_error") {
    // Both server-sent phx_error and the ones phoenix.js synthesizes on
    // transport loss (those have ref === undefined) pass through here, i.e.
    // exactly what channel.onError callbacks see.
    emit({
      type: "channel_error",
      topic,
      payload: payload === undefined ? null : payload,
      from_server: ref !== undefined,
      join_ref: channel.joinRef(),
      wire_join_ref: wireJoinRef,
    });
    return;
  }
  if (event === "phx_close") {
    // Server phx_close and the local close on leave() ("leave" payload).
    emit({
      type: "channel_close",
      topic,
      payload: payload === undefined ? null : payload,
      from_server: ref !== undefined,
      join_ref: channel.joinRef(),
      wire_join_ref: wireJoinRef,
    });
    return;
  }
  emit({
    type: "message",
    topic,
    event,
    payload,
    ref: ref === undefined ? null : ref,
    join_ref: wireJoinRef,
    channel_join_ref: channel.joinRef(),
  });
  if (
    entry.ack === "auto" &&
    payload &&
    typeof payload === "object" &&
    !(payload instanceof ArrayBuffer) &&
    Object.prototype.hasOwnProperty.call(payload, "message_id")
  ) {
    sendAck(entry, payload.message_id, "auto");
  }
}

// ---------------------------------------------------------------------------
// commands

const commands = {
  connect() {
    socket.connect();
  },
  disconnect(cmd) {
    socket.disconnect(() => emit({ type: "disconnected" }), cmd.code, cmd.reason);
  },
  join,
  leave(cmd) {
    const { channel } = entryFor(cmd);
    const push = channel.leave();
    for (const status of ["ok", "error", "timeout"]) {
      push.receive(status, (response) => emit({ type: "leave_reply", topic: channel.topic, status, response }));
    }
  },
  set_ack(cmd) {
    entryFor(cmd).ack = checkAckMode(cmd.ack);
  },
  set_params(cmd) {
    entryFor(cmd).params = cmd.params || {};
  },
  set_socket_params(cmd) {
    socketParams = cmd.params || {};
  },
  push(cmd) {
    const { channel } = entryFor(cmd);
    if (typeof cmd.event !== "string") throw new Error('push: "event" must be a string');
    const id = cmd.id === undefined ? null : cmd.id;
    const payload = cmd.payload || {};
    const push =
      cmd.timeout_ms === undefined ? channel.push(cmd.event, payload) : channel.push(cmd.event, payload, cmd.timeout_ms);
    for (const status of ["ok", "error", "timeout"]) {
      push.receive(status, (response) =>
        emit({ type: "push_reply", topic: channel.topic, event: cmd.event, status, response, id }),
      );
    }
  },
  ack(cmd) {
    if (cmd.message_id === undefined) throw new Error('ack: "message_id" is required');
    sendAck(entryFor(cmd), cmd.message_id, "manual");
  },
  reliable_join: reliableJoin,
  reliable_stats(cmd) {
    const entry = entryFor(cmd);
    if (!entry.reliable) throw new Error(`reliable_stats: ${cmd.topic} was not joined with reliable_join`);
    emit({
      type: "reliable_stats",
      topic: cmd.topic,
      stats: { ...entry.reliable.stats },
      position: entry.reliable.position(),
      dropped_acks: droppedAcks,
    });
  },
  drop_acks(cmd) {
    if (socketOpts.transport !== AckDroppingWebSocket) {
      throw new Error("drop_acks needs the driver started with --ack-filter");
    }
    dropAcks = Boolean(cmd.on);
    emit({ type: "drop_acks", on: dropAcks, dropped: droppedAcks });
  },
  terminate() {
    // An abrupt TCP drop: destroy the socket, no close frame (the server sees EOF / reset).
    const conn = socket.conn;
    if (!conn || conn.readyState !== WebSocket.OPEN) throw new Error("terminate: socket is not open");
    conn.terminate();
  },
  ping() {
    const pushed = socket.ping((rtt) => emit({ type: "pong", rtt }));
    if (!pushed) emit({ type: "ping_failed", reason: "socket not connected" });
  },
  raw(cmd) {
    const conn = socket.conn;
    if (!conn || conn.readyState !== WebSocket.OPEN) throw new Error("raw: socket is not open");
    if (cmd.data_base64 !== undefined) {
      conn.send(Buffer.from(cmd.data_base64, "base64"));
    } else {
      if (typeof cmd.data !== "string") throw new Error('raw: "data" must be a string');
      conn.send(cmd.data);
    }
  },
  state() {
    emit({
      type: "state",
      socket: socket.connectionState(),
      channels: socket.channels.map((c) => ({ topic: c.topic, state: c.state, join_ref: c.joinRef() })),
    });
  },
  exit() {
    process.exit(0);
  },
};

function handleLine(line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    driverError(`invalid JSON command: ${err.message}`, { line });
    return;
  }
  if (cmd === null || typeof cmd !== "object" || typeof cmd.cmd !== "string") {
    driverError('command must be a JSON object with a string "cmd"', { line });
    return;
  }
  const handler = Object.prototype.hasOwnProperty.call(commands, cmd.cmd) ? commands[cmd.cmd] : undefined;
  if (!handler) {
    driverError(`unknown command ${JSON.stringify(cmd.cmd)}`, { cmd: cmd.cmd });
    return;
  }
  try {
    handler(cmd);
  } catch (err) {
    driverError(`command ${cmd.cmd} failed`, { cmd: cmd.cmd, ...errorFields(err) });
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
rl.on("line", handleLine);
rl.on("close", () => process.exit(0));

emit({
  type: "ready",
  phoenix: phoenixVersion,
  ws: wsVersion,
  node: process.versions.node,
  url: args.url,
});
