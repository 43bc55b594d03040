#!/usr/bin/env node
// Interop test: the official JS SDK (@metered-ca/realtime) against a running
// Metered Realtime Messaging v1 server (normally `stampede serve`).
//
// Inputs (environment):
//   STAMPEDE_HTTP     base URL of the server, no path, e.g. http://127.0.0.1:8080
//   STAMPEDE_KEY_ID   secret key id      (sk_id_...)
//   STAMPEDE_SECRET   secret key secret  (sk_secret_...)
//
// Every step prints `ok <name>` or `FAIL <name>: <why>`; the last line is
// `N passed, M failed`. Exit code 0 only when every step passed. Each wait is
// bounded, and the whole script exits within ~55 s even if the server is dead.
//
// Only loopback targets are accepted: this script never talks to anything but
// the local machine.

import { isDeepStrictEqual, inspect } from "node:util";
import WebSocket from "ws";
import {
  SignallingClient,
  MeteredPeer,
  OversizedPayloadError,
  MeteredPeerOversizedError,
  WsCloseCode,
} from "@metered-ca/realtime";

// ---------------------------------------------------------------------------
// configuration

const WAIT_MS = 5_000; // every individual wait
const STEP_MS = 15_000; // hard cap for one step
const GLOBAL_MS = 55_000; // hard cap for the whole script
const NO_RECONNECT_WINDOW_MS = 1_500; // > SDK's first reconnect delay (500 ms +20 %)
const MAX_MESSAGE_SIZE = 65_536;

const HTTP = (process.env.STAMPEDE_HTTP ?? "").replace(/\/+$/, "");
const KEY_ID = process.env.STAMPEDE_KEY_ID ?? "";
const SECRET = process.env.STAMPEDE_SECRET ?? "";

function fatalUsage(msg) {
  console.log(`FAIL config: ${msg}`);
  console.log("0 passed, 1 failed");
  process.exit(2);
}

if (!HTTP || !KEY_ID || !SECRET) {
  fatalUsage("STAMPEDE_HTTP, STAMPEDE_KEY_ID and STAMPEDE_SECRET must all be set");
}
let httpUrl;
try {
  httpUrl = new URL(HTTP);
} catch {
  fatalUsage(`STAMPEDE_HTTP is not a URL: ${HTTP}`);
}
if (httpUrl.protocol !== "http:" && httpUrl.protocol !== "https:") {
  fatalUsage(`STAMPEDE_HTTP must be http(s): ${HTTP}`);
}
if (httpUrl.pathname !== "/" || httpUrl.search || httpUrl.hash) {
  fatalUsage(`STAMPEDE_HTTP must not have a path, query or fragment: ${HTTP}`);
}
{
  const h = httpUrl.hostname;
  const loopback = h === "localhost" || h === "[::1]" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
  if (!loopback) fatalUsage(`refusing non-loopback target ${h} (this test only talks to the local machine)`);
}
// The SDK wants an origin with no path; it appends /v1 itself.
const WS_ORIGIN = `${httpUrl.protocol === "https:" ? "wss:" : "ws:"}//${httpUrl.host}`;

// ---------------------------------------------------------------------------
// small helpers

const RUN = Math.random().toString(36).slice(2, 8);
const PEER_A = `interop-a-${RUN}`;
const PEER_B = `interop-b-${RUN}`;
const PEER_P1 = `interop-p1-${RUN}`;
const PEER_P2 = `interop-p2-${RUN}`;
// Members deliberately out of alphabetical order (and nested): the server must relay
// peerMetadata unmodified (MSG-2, PFR-2, SEND-6), so what the SDK delivers serializes to
// exactly the same JSON text; a server that sorts keys fails `sameJson`.
const META = {
  [PEER_A]: { name: "Alice Interop", color: "teal", role: "tester", n: 1, nested: { z: 1, a: [2, { y: true, x: null }] } },
  [PEER_B]: { name: "Bob Interop", color: "plum", role: "tester", n: 2 },
  [PEER_P1]: { displayName: "Peer One", role: "peer", tags: ["x", "y"], avatar: { w: 64, h: 64 } },
  [PEER_P2]: { role: "peer", displayName: "Peer Two", nested: { ok: true, id: "p2" } },
};
// Equal as serialized JSON: same members in the same order (isDeepStrictEqual ignores order).
const sameJson = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const CHAN_SC = `interop/sc-${RUN}`;
const CHAN_MP = `interop/mp-${RUN}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const show = (v) => inspect(v, { depth: 6, breakLength: Infinity, maxStringLength: 120 });

class StepError extends Error {}
function check(cond, msg) {
  if (!cond) throw new StepError(msg);
}
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new StepError(`timeout after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
/** Await a promise that must reject; returns the rejection reason. */
async function expectReject(promise, ms, what) {
  let resolved = false;
  let err;
  try {
    await withTimeout(promise, ms, what);
    resolved = true;
  } catch (e) {
    err = e;
  }
  check(!resolved, `${what} resolved but was expected to be refused`);
  check(!(err instanceof StepError), err?.message ?? String(err));
  return err;
}

/** REST call against the control plane, always with a timeout. */
async function rest(method, path, body) {
  const headers = { authorization: `Bearer ${KEY_ID}:${SECRET}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(`${HTTP}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT_MS),
    });
  } catch (e) {
    throw new StepError(`${method} ${path}: request failed: ${e?.cause?.code ?? e?.cause?.message ?? e?.message ?? e}`);
  }
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

const tokenCalls = new Map(); // peerId -> number of tokenProvider invocations

async function mintToken(peerId) {
  const r = await rest("POST", "/v1/tokens", {
    peerId,
    channels: ["interop/**"],
    permissions: ["subscribe", "publish", "presence", "send"],
    expiresInSec: 600,
    peerMetadata: META[peerId],
  });
  if (r.status !== 200) throw new StepError(`POST /v1/tokens -> HTTP ${r.status}: ${r.text.slice(0, 200)}`);
  if (!r.json || typeof r.json.token !== "string" || typeof r.json.expiresAt !== "number") {
    throw new StepError(`POST /v1/tokens: unexpected body ${r.text.slice(0, 200)}`);
  }
  return r.json;
}

function tokenProviderFor(peerId) {
  return async () => {
    tokenCalls.set(peerId, (tokenCalls.get(peerId) ?? 0) + 1);
    const { token } = await mintToken(peerId);
    return token;
  };
}

const socketOpens = new Map(); // peerId -> number of WebSocket constructions
function webSocketFactoryFor(peerId) {
  // Node 20 has no global WebSocket the SDK can use; `ws` provides the
  // browser-style addEventListener / MessageEvent / CloseEvent surface.
  //
  // allowSynchronousEvents: false makes `ws` dispatch each inbound message in
  // its own macrotask, as browsers do. With the ws >= 8.17 default (true),
  // frames that arrive in one TCP read (the subscribe `ack` immediately
  // followed by the presence snapshot, which ORD-2 requires) are dispatched
  // in the same tick, before MeteredPeer.join() has resumed from the awaited
  // subscribe and recorded its channel, so MeteredPeer silently drops the
  // snapshot. That is an SDK-on-Node artefact, not a server fault.
  return (url) => {
    socketOpens.set(peerId, (socketOpens.get(peerId) ?? 0) + 1);
    return new WebSocket(url, { allowSynchronousEvents: false });
  };
}

/**
 * Minimal RTCPeerConnection stand-in. MeteredPeer builds one per remote peer
 * as soon as presence reports it; Node 20 has no WebRTC, and this test never
 * adds media, so nothing is ever negotiated and no method beyond the
 * listener/close surface is exercised.
 */
class StubPeerConnection {
  constructor() {
    this.connectionState = "new";
    this.signalingState = "stable";
    this.iceConnectionState = "new";
    this.localDescription = null;
    this.remoteDescription = null;
  }
  async createOffer() { throw new Error("stub: no WebRTC in this test"); }
  async createAnswer() { throw new Error("stub: no WebRTC in this test"); }
  async setLocalDescription() {}
  async setRemoteDescription() {}
  async addIceCandidate() {}
  addTrack() { throw new Error("stub: no media in this test"); }
  removeTrack() {}
  getSenders() { return []; }
  createDataChannel() { throw new Error("stub: no data channels in this test"); }
  setConfiguration() {}
  addEventListener() {}
  removeEventListener() {}
  close() { this.connectionState = "closed"; this.signalingState = "closed"; }
}

/** Buffers every event of an emitter so waits can't miss early arrivals. */
class Recorder {
  constructor(label) {
    this.label = label;
    this.events = [];
    this.waiters = new Set();
  }
  attach(emitter, names) {
    for (const name of names) emitter.on(name, (payload) => this.push(name, payload));
    return this;
  }
  push(kind, payload) {
    this.events.push({ kind, payload, at: Date.now() });
    for (const w of [...this.waiters]) w();
  }
  mark() {
    return this.events.length;
  }
  find(kind, pred = () => true, since = 0) {
    for (let i = since; i < this.events.length; i++) {
      const e = this.events[i];
      if (e.kind === kind && pred(e.payload)) return e.payload;
    }
    return undefined;
  }
  all(kind, pred = () => true, since = 0) {
    return this.events.slice(since).filter((e) => e.kind === kind && pred(e.payload)).map((e) => e.payload);
  }
  waitFor(kind, pred, what, since = 0, ms = WAIT_MS) {
    const hit = this.find(kind, pred, since);
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const h = this.find(kind, pred, since);
        if (h !== undefined) {
          this.waiters.delete(waiter);
          clearTimeout(timer);
          resolve(h);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const seen = this.events.slice(since).map((e) => e.kind);
        reject(new StepError(`${this.label}: timeout after ${ms} ms waiting for ${what} (events since: [${seen.join(", ")}])`));
      }, ms);
      this.waiters.add(waiter);
    });
  }
}

const SC_EVENTS = ["connected", "disconnected", "state-change", "message", "direct", "presence", "server-error", "going-away", "token-provider-error"];
const MP_EVENTS = ["joined", "left", "state-change", "peer-joined", "peer-left", "data", "error"];

const hasPeer = (list, peerId) => Array.isArray(list) && list.some((p) => p.peerId === peerId);
const entry = (list, peerId) => list.find((p) => p.peerId === peerId);

function newSignallingClient(peerId) {
  const client = new SignallingClient({
    url: WS_ORIGIN,
    tokenProvider: tokenProviderFor(peerId),
    tokenProviderTimeoutMs: WAIT_MS,
    webSocketFactory: webSocketFactoryFor(peerId),
  });
  const rec = new Recorder(peerId).attach(client, SC_EVENTS);
  return { client, rec, peerId };
}

function newMeteredPeer(peerId) {
  const peer = new MeteredPeer({
    url: WS_ORIGIN,
    tokenProvider: tokenProviderFor(peerId),
    tokenProviderTimeoutMs: WAIT_MS,
    webSocketFactory: webSocketFactoryFor(peerId),
    rtcPeerConnectionFactory: () => new StubPeerConnection(),
  });
  // A listener-less "error" is fine for this SDK's emitter, but record it.
  const rec = new Recorder(peerId).attach(peer, MP_EVENTS);
  return { peer, rec, peerId };
}

// ---------------------------------------------------------------------------
// state shared between steps

const S = {}; // a, b: {client, rec}; p1, p2: {peer, rec}

// ---------------------------------------------------------------------------
// steps

const steps = [];
function step(name, needs, fn) {
  steps.push({ name, needs, fn });
}

step("rest_mint_token", [], async () => {
  const before = Math.floor(Date.now() / 1000);
  const r = await mintToken(PEER_A);
  check(r.token.split(".").length === 3, `token is not a compact JWS: ${r.token.slice(0, 40)}…`);
  check(
    r.expiresAt >= before + 600 - 5 && r.expiresAt <= before + 600 + 5,
    `expiresAt ${r.expiresAt} not ≈ now+600 (${before + 600})`,
  );
});

async function connectStep(key, peerId) {
  const c = newSignallingClient(peerId);
  S[key] = c;
  await withTimeout(c.client.connect(), WAIT_MS + 2_000, `${peerId} connect() (welcome)`);
  const ev = await c.rec.waitFor("connected", () => true, "connected event");
  check(ev.peerId === peerId, `welcome peerId ${show(ev.peerId)} != ${peerId}`);
  check(ev.isReconnect === false, "first connected event has isReconnect=true");
  check(typeof ev.expiresAt === "number", `expiresAt ${show(ev.expiresAt)} is not a number for a token connection`);
  check(ev.maxMessageSize === MAX_MESSAGE_SIZE, `maxMessageSize ${ev.maxMessageSize} != ${MAX_MESSAGE_SIZE}`);
  check(c.client.state === "connected", `client state ${c.client.state}`);
  check(tokenCalls.get(peerId) === 1, `tokenProvider called ${tokenCalls.get(peerId)} times, expected 1`);
}

step("sc_connect_a", [], () => connectStep("a", PEER_A));
step("sc_connect_b", [], () => connectStep("b", PEER_B));

step("sc_subscribe_snapshot", ["sc_connect_a"], async () => {
  const { client, rec } = S.a;
  const m = rec.mark();
  await withTimeout(client.subscribe(CHAN_SC, { includeSenderMetadata: true }), WAIT_MS, "subscribe ack");
  const snap = await rec.waitFor("presence", (p) => p.channel === CHAN_SC, "presence snapshot", m);
  check(Array.isArray(snap.joined) && Array.isArray(snap.left), `snapshot arrays missing: ${show(snap)}`);
  check(snap.left.length === 0, `snapshot has non-empty left: ${show(snap.left)}`);
  check(!hasPeer(snap.joined, PEER_A), `snapshot lists the subscriber itself: ${show(snap.joined)}`);
  check(!hasPeer(snap.joined, PEER_B), `snapshot lists B before B subscribed: ${show(snap.joined)}`);
});

step("sc_b_join_seen_by_a", ["sc_subscribe_snapshot", "sc_connect_b"], async () => {
  const ma = S.a.rec.mark();
  const mb = S.b.rec.mark();
  await withTimeout(S.b.client.subscribe(CHAN_SC, { includeSenderMetadata: true }), WAIT_MS, "B subscribe ack");
  const snapB = await S.b.rec.waitFor("presence", (p) => p.channel === CHAN_SC, "B's presence snapshot", mb);
  check(hasPeer(snapB.joined, PEER_A), `B's snapshot lacks A: ${show(snapB)}`);
  check(!hasPeer(snapB.joined, PEER_B), `B's snapshot lists B itself: ${show(snapB)}`);
  check(
    sameJson(entry(snapB.joined, PEER_A).metadata, META[PEER_A]),
    `A's metadata in B's snapshot ${show(entry(snapB.joined, PEER_A).metadata)} != ${show(META[PEER_A])}`,
  );
  const delta = await S.a.rec.waitFor(
    "presence",
    (p) => p.channel === CHAN_SC && hasPeer(p.joined, PEER_B),
    "A sees presence joined B",
    ma,
  );
  check(
    sameJson(entry(delta.joined, PEER_B).metadata, META[PEER_B]),
    `B's metadata in A's join delta ${show(entry(delta.joined, PEER_B).metadata)} != ${show(META[PEER_B])}`,
  );
  check(delta.left.length === 0, `join delta has non-empty left: ${show(delta.left)}`);
});

step("sc_publish_a_to_b", ["sc_b_join_seen_by_a"], async () => {
  const ma = S.a.rec.mark();
  const mb = S.b.rec.mark();
  const data = { kind: "chat", text: "hello from A", n: 42, nested: [1, { x: null }], big: 9007199254740991 };
  await withTimeout(S.a.client.publish(CHAN_SC, data), WAIT_MS, "publish ack");
  const msg = await S.b.rec.waitFor("message", (p) => p.channel === CHAN_SC && p.data?.kind === "chat", "B receives A's publish", mb);
  check(msg.from === PEER_A, `message.from ${show(msg.from)} != ${PEER_A}`);
  check(isDeepStrictEqual(msg.data, data), `message.data ${show(msg.data)} != ${show(data)}`);
  check(sameJson(msg.fromMetadata, META[PEER_A]), `fromMetadata ${show(msg.fromMetadata)} != ${show(META[PEER_A])}`);
  await sleep(300);
  const echoed = S.a.rec.all("message", (p) => p.channel === CHAN_SC, ma);
  check(echoed.length === 0, `publisher was echoed its own message: ${show(echoed)}`);
});

step("sc_direct_a_to_b", ["sc_b_join_seen_by_a"], async () => {
  const ma = S.a.rec.mark();
  const mb = S.b.rec.mark();
  const data = { kind: "whisper", text: "direct from A" };
  await withTimeout(S.a.client.send(PEER_B, data), WAIT_MS, "send ack");
  const d = await S.b.rec.waitFor("direct", (p) => p.data?.kind === "whisper", "B receives A's direct", mb);
  check(d.from === PEER_A, `direct.from ${show(d.from)} != ${PEER_A}`);
  check(isDeepStrictEqual(d.data, data), `direct.data ${show(d.data)} != ${show(data)}`);
  check(sameJson(d.fromMetadata, META[PEER_A]), `direct.fromMetadata ${show(d.fromMetadata)} != ${show(META[PEER_A])}`);
  check(S.a.rec.all("direct", () => true, ma).length === 0, "sender received its own direct");
});

step("sc_publish_60k_under_cap", ["sc_b_join_seen_by_a"], async () => {
  // Well under the cap including the envelope: must be accepted and relayed intact.
  const mb = S.b.rec.mark();
  const data = { kind: "bulk", blob: "é".repeat(5_000) + "y".repeat(50_000) };
  await withTimeout(S.a.client.publish(CHAN_SC, data), WAIT_MS, "60 KB publish ack");
  const msg = await S.b.rec.waitFor("message", (p) => p.channel === CHAN_SC && p.data?.kind === "bulk", "B receives 60 KB publish", mb);
  check(isDeepStrictEqual(msg.data, data), `60 KB payload corrupted (length ${msg.data?.blob?.length})`);
});

step("sc_oversize_refused_client_side", ["sc_b_join_seen_by_a"], async () => {
  const ma = S.a.rec.mark();
  const mb = S.b.rec.mark();
  const opensBefore = socketOpens.get(PEER_A);
  const data = { kind: "too-big", blob: "z".repeat(70_000) }; // JSON > 65 536 bytes
  const err = await expectReject(S.a.client.publish(CHAN_SC, data), WAIT_MS, "oversized publish");
  check(
    err instanceof OversizedPayloadError && err.name === "OversizedPayloadError",
    `expected OversizedPayloadError, got ${err?.name}: ${err?.message}`,
  );
  check(err.cap === MAX_MESSAGE_SIZE, `err.cap ${err.cap} != ${MAX_MESSAGE_SIZE}`);
  check(err.size === JSON.stringify(data).length, `err.size ${err.size} != ${JSON.stringify(data).length}`);
  // The same check guards send().
  const err2 = await expectReject(S.a.client.send(PEER_B, data), WAIT_MS, "oversized send");
  check(err2 instanceof OversizedPayloadError, `send(): expected OversizedPayloadError, got ${err2?.name}`);
  // Connection must still be alive and usable.
  await sleep(200);
  check(S.a.client.state === "connected", `client state after refusal: ${S.a.client.state}`);
  check(S.a.rec.all("disconnected", () => true, ma).length === 0, "connection closed after oversized publish");
  check(socketOpens.get(PEER_A) === opensBefore, "client reconnected after oversized publish");
  await withTimeout(S.a.client.publish(CHAN_SC, { kind: "after-oversize" }), WAIT_MS, "publish after refusal");
  await S.b.rec.waitFor("message", (p) => p.data?.kind === "after-oversize", "B receives follow-up publish", mb);
  check(!S.b.rec.find("message", (p) => p.data?.kind === "too-big", mb), "oversized payload reached B");
});

step("sc_b_unsubscribe_seen_by_a", ["sc_b_join_seen_by_a"], async () => {
  const ma = S.a.rec.mark();
  await withTimeout(S.b.client.unsubscribe(CHAN_SC), WAIT_MS, "B unsubscribe ack");
  const delta = await S.a.rec.waitFor(
    "presence",
    (p) => p.channel === CHAN_SC && hasPeer(p.left, PEER_B),
    "A sees presence left B (unsubscribe)",
    ma,
  );
  check(
    sameJson(entry(delta.left, PEER_B).metadata, META[PEER_B]),
    `left entry metadata ${show(entry(delta.left, PEER_B).metadata)} != ${show(META[PEER_B])}`,
  );
  check(delta.joined.length === 0, `leave delta has non-empty joined: ${show(delta.joined)}`);
});

step("sc_b_rejoin_seen_by_a", ["sc_b_unsubscribe_seen_by_a"], async () => {
  const ma = S.a.rec.mark();
  await withTimeout(S.b.client.subscribe(CHAN_SC, { includeSenderMetadata: true }), WAIT_MS, "B re-subscribe ack");
  await S.a.rec.waitFor("presence", (p) => p.channel === CHAN_SC && hasPeer(p.joined, PEER_B), "A sees B join again", ma);
});

step("sc_kick_4020_terminal", ["sc_connect_b"], async () => {
  const ma = S.a?.rec.mark();
  const mb = S.b.rec.mark();
  const opensBefore = socketOpens.get(PEER_B);
  const tokensBefore = tokenCalls.get(PEER_B);
  const r = await rest("DELETE", `/v1/peers/${encodeURIComponent(PEER_B)}`);
  check(r.status === 200, `DELETE /v1/peers/${PEER_B} -> HTTP ${r.status}: ${r.text.slice(0, 200)}`);
  check(r.json?.peerId === PEER_B, `kick response peerId ${show(r.json?.peerId)} != ${PEER_B}`);
  check(r.json?.closed === 1, `kick response closed=${show(r.json?.closed)}, expected 1`);
  const ev = await S.b.rec.waitFor("disconnected", () => true, "B disconnected event", mb);
  check(ev.code === WsCloseCode.AdminDisconnect, `close code ${ev.code} != 4020`);
  check(ev.willReconnect === false, "SDK reports willReconnect=true after 4020");
  if (ma !== undefined && S.a.client.state === "connected" && status.get("sc_b_rejoin_seen_by_a") === true) {
    // Leaving by kick is announced like any other leave (PRES-6).
    await S.a.rec.waitFor("presence", (p) => p.channel === CHAN_SC && hasPeer(p.left, PEER_B), "A sees B leave after kick", ma);
  }
  await sleep(NO_RECONNECT_WINDOW_MS);
  check(S.b.client.state === "closed", `B state ${S.b.client.state} after 4020, expected closed`);
  check(socketOpens.get(PEER_B) === opensBefore, `B reconnected after 4020 (${socketOpens.get(PEER_B) - opensBefore} new sockets)`);
  check(tokenCalls.get(PEER_B) === tokensBefore, "tokenProvider called again after 4020");
  check(S.b.rec.all("connected", () => true, mb).length === 0, "B got a new welcome after 4020");
});

// ---- MeteredPeer layer -----------------------------------------------------

step("mp_join_p1", [], async () => {
  const p = newMeteredPeer(PEER_P1);
  S.p1 = p;
  await withTimeout(p.peer.join(CHAN_MP, { includeSenderMetadata: true }), WAIT_MS + 2_000, "P1 join()");
  const j = await p.rec.waitFor("joined", () => true, "P1 joined event");
  check(j.peerId === PEER_P1 && j.channel === CHAN_MP, `joined event ${show(j)}`);
  check(p.peer.peerId === PEER_P1, `peer.peerId ${p.peer.peerId}`);
  check(p.peer.state === "joined", `state ${p.peer.state}`);
  await sleep(200); // the (empty) snapshot must not invent peers
  check(p.peer.remotePeers.length === 0, `P1 sees phantom peers: ${show(p.peer.remotePeers.map((r) => r.id))}`);
});

step("mp_join_p2_peer_joined", ["mp_join_p1"], async () => {
  const m1 = S.p1.rec.mark();
  const p = newMeteredPeer(PEER_P2);
  S.p2 = p;
  await withTimeout(p.peer.join(CHAN_MP, { includeSenderMetadata: true }), WAIT_MS + 2_000, "P2 join()");
  // P2 learns about P1 from its presence snapshot...
  const seen2 = await p.rec.waitFor("peer-joined", (e) => e.peer.id === PEER_P1, "P2 peer-joined(P1) from snapshot");
  check(sameJson(seen2.peer.metadata, META[PEER_P1]), `P1 metadata at P2 ${show(seen2.peer.metadata)}`);
  // ...and P1 learns about P2 from the join delta.
  const seen1 = await S.p1.rec.waitFor("peer-joined", (e) => e.peer.id === PEER_P2, "P1 peer-joined(P2)", m1);
  check(sameJson(seen1.peer.metadata, META[PEER_P2]), `P2 metadata at P1 ${show(seen1.peer.metadata)}`);
  check(
    S.p1.peer.remotePeers.map((r) => r.id).join() === PEER_P2,
    `P1 remotePeers ${show(S.p1.peer.remotePeers.map((r) => r.id))}`,
  );
  check(p.peer.remotePeers.map((r) => r.id).join() === PEER_P1, `P2 remotePeers ${show(p.peer.remotePeers.map((r) => r.id))}`);
});

step("mp_broadcast_with_sender_metadata", ["mp_join_p2_peer_joined"], async () => {
  const m1 = S.p1.rec.mark();
  const m2 = S.p2.rec.mark();
  const data = { kind: "mp-broadcast", text: "hi all" };
  await withTimeout(S.p2.peer.send(data), WAIT_MS, "P2 send() ack");
  const ev = await S.p1.rec.waitFor("data", (e) => e.data?.kind === "mp-broadcast", "P1 data(broadcast)", m1);
  check(ev.kind === "broadcast", `kind ${ev.kind}`);
  check(ev.senderPeerId === PEER_P2, `senderPeerId ${ev.senderPeerId}`);
  check(isDeepStrictEqual(ev.data, data), `data ${show(ev.data)}`);
  check(sameJson(ev.senderMetadata, META[PEER_P2]), `senderMetadata ${show(ev.senderMetadata)}`);
  await sleep(200);
  check(S.p2.rec.all("data", () => true, m2).length === 0, "P2 saw its own broadcast");
});

step("mp_direct_sendTo", ["mp_join_p2_peer_joined"], async () => {
  const m2 = S.p2.rec.mark();
  const data = { kind: "mp-direct", text: "just you" };
  await withTimeout(S.p1.peer.sendTo(PEER_P2, data), WAIT_MS, "P1 sendTo() ack");
  const ev = await S.p2.rec.waitFor("data", (e) => e.data?.kind === "mp-direct", "P2 data(direct)", m2);
  check(ev.kind === "direct", `kind ${ev.kind}`);
  check(ev.senderPeerId === PEER_P1, `senderPeerId ${ev.senderPeerId}`);
  check(isDeepStrictEqual(ev.data, data), `data ${show(ev.data)}`);
  check(sameJson(ev.senderMetadata, META[PEER_P1]), `senderMetadata ${show(ev.senderMetadata)}`);
});

step("mp_oversize_refused", ["mp_join_p2_peer_joined"], async () => {
  const m1 = S.p1.rec.mark();
  const m2 = S.p2.rec.mark();
  const opensBefore = socketOpens.get(PEER_P1);
  const big = { kind: "mp-too-big", blob: "q".repeat(66_000) };
  const err = await expectReject(S.p1.peer.send(big), WAIT_MS, "oversized MeteredPeer.send");
  check(
    err instanceof MeteredPeerOversizedError && err.name === "MeteredPeerOversizedError",
    `expected MeteredPeerOversizedError, got ${err?.name}: ${err?.message}`,
  );
  check(err.cap === MAX_MESSAGE_SIZE, `err.cap ${err.cap}`);
  const err2 = await expectReject(S.p1.peer.sendTo(PEER_P2, big), WAIT_MS, "oversized MeteredPeer.sendTo");
  check(err2 instanceof MeteredPeerOversizedError, `sendTo(): expected MeteredPeerOversizedError, got ${err2?.name}`);
  await sleep(200);
  check(S.p1.peer.state === "joined", `P1 state after refusal: ${S.p1.peer.state}`);
  check(socketOpens.get(PEER_P1) === opensBefore, "P1 reconnected after oversized send");
  check(S.p1.rec.all("state-change", () => true, m1).length === 0, "P1 changed state after oversized send");
  await withTimeout(S.p1.peer.send({ kind: "mp-after-oversize" }), WAIT_MS, "P1 send after refusal");
  await S.p2.rec.waitFor("data", (e) => e.data?.kind === "mp-after-oversize", "P2 receives follow-up", m2);
});

step("mp_close_peer_left", ["mp_join_p2_peer_joined"], async () => {
  const m1 = S.p1.rec.mark();
  const m2 = S.p2.rec.mark();
  await withTimeout(S.p2.peer.close("interop done"), WAIT_MS, "P2 close()");
  const left2 = await S.p2.rec.waitFor("left", () => true, "P2 left event", m2);
  check(left2.peerId === PEER_P2 && left2.channel === CHAN_MP, `P2 left event ${show(left2)}`);
  const ev = await S.p1.rec.waitFor("peer-left", (e) => e.peer.id === PEER_P2, "P1 peer-left(P2)", m1);
  check(sameJson(ev.peer.metadata, META[PEER_P2]), `peer-left metadata ${show(ev.peer.metadata)}`);
  check(S.p1.peer.remotePeers.length === 0, `P1 remotePeers ${show(S.p1.peer.remotePeers.map((r) => r.id))}`);
});

step("mp_kick_4020_error_event", ["mp_join_p1"], async () => {
  const m1 = S.p1.rec.mark();
  const opensBefore = socketOpens.get(PEER_P1);
  const r = await rest("DELETE", `/v1/peers/${encodeURIComponent(PEER_P1)}`);
  check(r.status === 200 && r.json?.closed === 1, `kick -> HTTP ${r.status} ${r.text.slice(0, 200)}`);
  const e = await S.p1.rec.waitFor("error", () => true, "P1 error event", m1);
  check(e.err?.name === "admin_disconnect", `error name ${e.err?.name} (${e.err?.message}), expected admin_disconnect`);
  const left = await S.p1.rec.waitFor("left", () => true, "P1 left event", m1);
  check(left.peerId === PEER_P1, `left event ${show(left)}`);
  await sleep(NO_RECONNECT_WINDOW_MS);
  check(S.p1.peer.state === "closed", `P1 state ${S.p1.peer.state}, expected closed`);
  check(socketOpens.get(PEER_P1) === opensBefore, "P1 reconnected after 4020");
});

// ---------------------------------------------------------------------------
// runner

let passed = 0;
let failed = 0;
const status = new Map(); // name -> boolean
let current = -1;
let finished = false;

function report(name, ok, why) {
  status.set(name, ok);
  if (ok) {
    passed++;
    console.log(`ok ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}: ${String(why).replace(/\s+/g, " ").trim()}`);
  }
}

async function cleanup() {
  const closers = [];
  for (const k of ["a", "b"]) if (S[k]) closers.push(S[k].client.close().catch(() => {}));
  for (const k of ["p1", "p2"]) if (S[k]) closers.push(S[k].peer.close().catch(() => {}));
  await Promise.race([Promise.all(closers), sleep(2_000)]);
}

function finish(code) {
  if (finished) return;
  finished = true;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code);
}

const globalTimer = setTimeout(() => {
  for (let i = Math.max(current, 0); i < steps.length; i++) {
    if (!status.has(steps[i].name)) {
      report(steps[i].name, false, i === current ? `global ${GLOBAL_MS} ms deadline hit` : "not run (global deadline)");
    }
  }
  finish(1);
}, GLOBAL_MS);

process.on("unhandledRejection", (e) => {
  console.log(`# unhandled rejection: ${e?.name ?? ""} ${e?.message ?? e}`);
});

console.log(`# target ${HTTP} (ws ${WS_ORIGIN}/v1), run id ${RUN}`);
for (let i = 0; i < steps.length; i++) {
  current = i;
  const { name, needs, fn } = steps[i];
  const missing = needs.filter((n) => status.get(n) !== true);
  if (missing.length > 0) {
    report(name, false, `skipped: prerequisite ${missing.join(", ")} failed`);
    continue;
  }
  try {
    await withTimeout(Promise.resolve().then(fn), STEP_MS, `step ${name}`);
    report(name, true);
  } catch (e) {
    const why = e instanceof StepError ? e.message : `${e?.name ?? "Error"}: ${e?.message ?? e}`;
    report(name, false, why);
  }
}
if (!finished) {
  await cleanup();
  clearTimeout(globalTimer);
  finish(failed === 0 && passed === steps.length ? 0 : 1);
}
