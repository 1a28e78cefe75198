// ackvisor reliable channel helper for the unmodified phoenix.js client (1.7 and 1.8).
//
// Wraps a phoenix.js Channel so an application never misses, repeats or reorders a message
// across ackvisor's let-it-crash reconnects:
//   * acks every message that carries a `message_id` (per message, or cumulatively by offset:
//     one `message_ack {offset, epoch}` per burst of messages);
//   * tracks the last (epoch, offset) delivered and passes it as `resume` on every (re)join
//     (the join params are a function, which phoenix.js re-evaluates on each rejoin);
//   * drops duplicates (an offset already delivered in the same epoch) before they reach the
//     handlers bound with `rc.on(...)`;
//   * treats a payload carrying `snapshot: {epoch, offset}` (e.g. `hydrate` after
//     `recovered: false`) as the new starting point.
//
// Usage:
//   import { Socket } from "phoenix";
//   import { reliableChannel } from "./clients/js/reliable.mjs";
//   const rc = reliableChannel(socket, "superheroes:lobby", { params: {} });
//   rc.on("hydrate", (payload) => render(payload.superheroes));     // a snapshot: replace state
//   rc.on("superhero_added", (payload) => add(payload.superhero));  // each offset exactly once
//   rc.join();
//
// Bind handlers through `rc.on` (not `rc.channel.on`): only `rc.on` skips duplicates.

/**
 * @param {import("phoenix").Socket} socket
 * @param {string} topic
 * @param {{params?: object|(() => object), ack?: "each"|"cumulative", onJoin?: (resp: object) => void}} options
 */
export function reliableChannel(socket, topic, options = {}) {
  const { params = {}, ack = "each", onJoin } = options;
  if (ack !== "each" && ack !== "cumulative") throw new Error(`ack must be "each" or "cumulative", not ${ack}`);
  // {epoch, offset} of the last history message delivered to the application (or the join /
  // snapshot position), and the join_ref under which a message reached it (null otherwise):
  // a second push for the same offset in the same join is not a duplicate, in a later join it is.
  let position = null;
  let positionJoin = null;
  let cumulative = null; // {offset, epoch, joinRef}: the newest offset not yet acked (cumulative mode)
  let flushScheduled = false;
  const duplicates = new WeakSet();
  const stats = { delivered: 0, duplicates: 0, acks: 0, joins: 0, recovered: 0, not_recovered: 0, snapshots: 0, gaps: 0 };

  const joinParams = () => {
    const base = typeof params === "function" ? params() : params;
    return position ? { ...base, resume: { epoch: position.epoch, offset: position.offset } } : { ...base };
  };
  const channel = socket.channel(topic, joinParams);

  const pushAck = (payload) => {
    // An ack for a join that is gone is useless (its server channel is dead); phoenix.js would
    // buffer it and send it on the next join, where it is unknown.
    if (!channel.canPush()) return;
    channel.push("message_ack", payload);
    stats.acks += 1;
  };

  const flush = () => {
    flushScheduled = false;
    const pending = cumulative;
    cumulative = null;
    if (pending && pending.joinRef === channel.joinRef()) {
      pushAck({ offset: pending.offset, epoch: pending.epoch, status: "Received" });
    }
  };

  const ackMessage = (payload) => {
    if (ack === "cumulative" && typeof payload.offset === "number" && typeof payload.epoch === "string") {
      // Coalesce: the frames of one socket read are dispatched in one turn; ack the newest once.
      cumulative = { offset: payload.offset, epoch: payload.epoch, joinRef: channel.joinRef() };
      if (!flushScheduled) {
        flushScheduled = true;
        setTimeout(flush, 0);
      }
    } else {
      pushAck({ message_id: payload.message_id, status: "Received" });
    }
  };

  const previousOnMessage = channel.onMessage.bind(channel);
  channel.onMessage = (event, payload, ref, joinRef) => {
    payload = previousOnMessage(event, payload, ref, joinRef);
    if (!payload || typeof payload !== "object" || payload instanceof ArrayBuffer) return payload;
    if (event.startsWith("phx_") || event.startsWith("chan_reply_")) return payload;
    if (payload.snapshot && typeof payload.snapshot.offset === "number") {
      const snap = payload.snapshot;
      stats.snapshots += 1;
      // forward only within an epoch, like the server
      if (!position || position.epoch !== snap.epoch || position.offset < snap.offset) {
        position = { epoch: snap.epoch, offset: snap.offset };
        positionJoin = null;
      }
    } else if (typeof payload.offset === "number" && typeof payload.epoch === "string") {
      const currentJoin = channel.joinRef();
      const sameEpoch = position && payload.epoch === position.epoch;
      if (
        sameEpoch &&
        (payload.offset < position.offset ||
          (payload.offset === position.offset && (positionJoin === null || positionJoin !== currentJoin)))
      ) {
        duplicates.add(payload);
        stats.duplicates += 1;
      } else {
        if (sameEpoch && payload.offset > position.offset + 1) stats.gaps += 1;
        position = { epoch: payload.epoch, offset: payload.offset };
        positionJoin = currentJoin;
      }
    }
    if (typeof payload.message_id === "string") ackMessage(payload);
    return payload;
  };

  channel.joinPush.receive("ok", (resp) => {
    stats.joins += 1;
    if (resp && resp.recovered === true) stats.recovered += 1;
    if (resp && resp.recovered === false) {
      stats.not_recovered += 1;
      if (typeof resp.offset === "number" && typeof resp.epoch === "string") {
        // No replay is coming: the stream restarts at the server's position (a snapshot follows).
        position = { epoch: resp.epoch, offset: resp.offset };
        positionJoin = null;
      }
    }
    if (onJoin) onJoin(resp);
  });

  return {
    channel,
    stats,
    /** The (epoch, offset) of the last message handed to the application, or null. */
    position: () => (position ? { ...position } : null),
    /** Bind a handler that never sees duplicates. Returns the phoenix.js binding ref. */
    on(event, callback) {
      return channel.on(event, (payload, ref, joinRef) => {
        if (payload && typeof payload === "object" && duplicates.has(payload)) return;
        stats.delivered += 1;
        callback(payload, ref, joinRef);
      });
    },
    off: (event, ref) => channel.off(event, ref),
    join: (timeout) => (timeout === undefined ? channel.join() : channel.join(timeout)),
    leave: (timeout) => (timeout === undefined ? channel.leave() : channel.leave(timeout)),
  };
}
