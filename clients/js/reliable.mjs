// ackvisor reliable channel helper for the unmodified phoenix.js client.
//
// Wraps a phoenix.js Channel so an application never misses, repeats or reorders a message
// across ackvisor's let-it-crash reconnects:
//   * acks every message that carries a `message_id` (per message, or cumulatively by offset);
//   * tracks the last (epoch, offset) seen and passes it as `resume` on every (re)join
//     (the join params are a function, which phoenix.js re-evaluates on each rejoin);
//   * drops duplicates (an offset at or below the last one seen in the same epoch) before
//     they reach your handlers;
//   * treats a payload carrying `snapshot: {epoch, offset}` (e.g. `hydrate` after
//     `recovered: false`) as the new starting point.
//
// Usage:
//   import { Socket } from "phoenix";
//   import { reliableChannel } from "./clients/js/reliable.mjs";
//   const rc = reliableChannel(socket, "superheroes:lobby", { params: {} });
//   rc.on("hydrate", (payload) => render(payload.superheroes));
//   rc.on("superhero_added", (payload) => add(payload.superhero));
//   rc.join();

/**
 * @param {import("phoenix").Socket} socket
 * @param {string} topic
 * @param {{params?: object|(() => object), ack?: "each"|"cumulative", onJoin?: (resp: object) => void}} options
 */
export function reliableChannel(socket, topic, options = {}) {
  const { params = {}, ack = "each", onJoin } = options;
  if (ack !== "each" && ack !== "cumulative") throw new Error(`ack must be "each" or "cumulative", not ${ack}`);
  let position = null; // {epoch, offset} of the last message delivered to the application
  const duplicates = new WeakSet();
  const stats = { delivered: 0, duplicates: 0, acks: 0, joins: 0, recovered: 0, snapshots: 0, gaps: 0 };

  const joinParams = () => {
    const base = typeof params === "function" ? params() : params;
    return position ? { ...base, resume: { epoch: position.epoch, offset: position.offset } } : { ...base };
  };
  const channel = socket.channel(topic, joinParams);

  const sendAck = (payload) => {
    if (ack === "cumulative" && typeof payload.offset === "number") {
      channel.push("message_ack", { offset: payload.offset, epoch: payload.epoch, status: "Received" });
    } else {
      channel.push("message_ack", { message_id: payload.message_id, status: "Received" });
    }
    stats.acks += 1;
  };

  channel.onMessage = (event, payload, _ref, _joinRef) => {
    if (!payload || typeof payload !== "object" || event.startsWith("phx_") || event.startsWith("chan_reply_")) {
      return payload;
    }
    if (payload.snapshot && typeof payload.snapshot.offset === "number") {
      position = { epoch: payload.snapshot.epoch, offset: payload.snapshot.offset };
      stats.snapshots += 1;
    } else if (typeof payload.offset === "number" && payload.epoch !== undefined) {
      if (position && payload.epoch === position.epoch && payload.offset <= position.offset) {
        duplicates.add(payload);
        stats.duplicates += 1;
      } else {
        if (position && payload.epoch === position.epoch && payload.offset !== position.offset + 1) stats.gaps += 1;
        position = { epoch: payload.epoch, offset: payload.offset };
      }
    }
    if (typeof payload.message_id === "string") sendAck(payload);
    return payload;
  };

  channel.joinPush.receive("ok", (resp) => {
    stats.joins += 1;
    if (resp && resp.recovered === true) stats.recovered += 1;
    if (resp && resp.recovered === false && typeof resp.offset === "number") {
      // No replay is coming: start from the server's current position (a snapshot follows).
      position = { epoch: resp.epoch, offset: resp.offset };
    }
    if (onJoin) onJoin(resp);
  });

  return {
    channel,
    stats,
    /** The (epoch, offset) of the last message handed to the application, or null. */
    position: () => (position ? { ...position } : null),
    /** Bind a handler that never sees duplicates. */
    on(event, callback) {
      return channel.on(event, (payload, ref, joinRef) => {
        if (payload && typeof payload === "object" && duplicates.has(payload)) return;
        stats.delivered += 1;
        callback(payload, ref, joinRef);
      });
    },
    join: (timeout) => channel.join(timeout),
    leave: (timeout) => channel.leave(timeout),
  };
}
