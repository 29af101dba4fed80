// The operator's page: polls the station's JSON API (README, "The operator's page").
// No framework and no build step; nothing is loaded from outside the station.
"use strict";

const STATUS_EVERY_MS = 333;    // counters, link, camera, and a new live frame: 3 a second
const SLOW_EVERY_MS = 2000;     // strip, alarms, rejects
const COUNTER_ROWS = [
  ["parts", "parts"],
  ["passed", "passed"],
  ["rejected", "rejected"],
  ["failsafe_rejects", "of which fail-safe"],
  ["missed_triggers", "missed triggers"],
];

const $ = (id) => document.getElementById(id);
let view = "line";
let liveUid = null;
let dialogUid = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function clock(unix) {
  return unix ? new Date(unix * 1000).toLocaleTimeString() : "-";
}

function ms(v) {
  return v === null || v === undefined ? "-" : v.toFixed(1) + " ms";
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

async function act(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer " + $("token").value.trim(),
    },
    body: JSON.stringify(Object.assign({ name: $("name").value.trim() }, body || {})),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function show(name) {
  if (!document.getElementById(name)) name = "line";
  view = name;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== name;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  refreshSlow();
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    cells.forEach((c, i) => tr.append(el(i === 0 ? "th" : "td", c, typeof c === "number" ? "n" : "")));
    return tr;
  }));
}

async function refreshStatus() {
  let s;
  try {
    s = await getJSON("/api/status");
  } catch (e) {
    $("conn").textContent = "station unreachable";
    $("conn").className = "pill down";
    return;
  }
  if (s.mode !== "line") {
    $("conn").textContent = s.mode;
    $("conn").className = "pill replay";
  } else {
    $("conn").textContent = s.link.up ? "link up" : "LINK DOWN";
    $("conn").className = "pill " + (s.link.up ? "up" : "down");
  }
  $("calibration").hidden = !s.calibration;
  $("line-counters").hidden = !!s.calibration;
  $("parts-strip").hidden = !!s.calibration;
  if (s.calibration) fillCalibration(s.calibration);
  const shift = s.since_shift_start, start = s.since_start;
  const rows = COUNTER_ROWS.map(([key, label]) => [label, shift[key] ?? "-", start[key] ?? 0]);
  const reasons = new Set([...Object.keys(shift.failsafe_by_reason || {}),
                           ...Object.keys(start.failsafe_by_reason || {})]);
  for (const r of [...reasons].sort()) {
    rows.push(["fail-safe: " + r, (shift.failsafe_by_reason || {})[r] || 0, (start.failsafe_by_reason || {})[r] || 0]);
  }
  for (const [r, n] of Object.entries(start.mega_failsafe_by_reason || {}).sort()) {
    rows.push(["rejected by the Mega alone: " + r, "-", n]);
  }
  fillRows($("counters").querySelector("tbody"), rows);
  $("latency").textContent =
    "trigger to verdict p50/p99: " + ms(start.verdict_latency_ms_p50) + " / " +
    ms(start.verdict_latency_ms_p99) + "; frame to verdict p50/p99: " +
    ms(start.frame_to_verdict_ms_p50) + " / " + ms(start.frame_to_verdict_ms_p99);
  if (view === "health") fillHealth(s);
  const latest = s.latest;
  if (latest && latest.uid !== liveUid && view === "line") {
    liveUid = latest.uid;
    $("live").src = "/api/live.jpg?uid=" + latest.uid;
    const score = latest.score === null ? "-" : latest.score.toFixed(3);
    $("live-caption").textContent = s.calibration
      ? "frame " + latest.uid + ": " + latest.verdict + " at " + clock(latest.at)
      : "part " + latest.uid + ": " + latest.verdict + " (score " + score + ")" +
        (latest.failsafe ? ", fail-safe: " + latest.failsafe : "") + " at " + clock(latest.at);
  }
}

function fillCalibration(c) {
  const [low, high] = c.brightness_limits;
  fillRows($("calibration-figures").querySelector("tbody"), [
    ["brightness", c.brightness, low + " .. " + high],
    ["contrast", c.contrast, "at least " + c.min_contrast],
    ["focus", c.focus ?? "-", "at least " + c.min_focus],
    ["crop", c.crop_px + " px", c.part],
  ]);
  $("calibration-verdict").textContent =
    c.problems.length ? "not yet: " + c.problems.join("; ") : "within limits";
  $("calibration-verdict").className = c.problems.length ? "bad" : "good";
}

function fillHealth(s) {
  const mb = (b) => (b / 1e6).toFixed(1) + " MB";
  const rows = [
    ["link", s.link.up ? "up" : "DOWN"],
    ["link epoch", s.link.epoch],
    ["Mega port", s.link.port],
    ["Mega firmware", s.link.firmware || "-"],
    ["Mega calibration checksum", s.link.mega_calibration_crc || "-"],
    ["station calibration checksum", s.model.calibration_crc],
    ["camera", s.camera.healthy ? "ok" : "STALLED"],
    ["camera fps", s.camera.fps ?? "-"],
    ["camera stalls / reopens / bad frames", s.camera.stalls + " / " + s.camera.reopens + " / " + s.camera.bad_frames],
    ["camera last error", s.camera.last_error || "-"],
    ["model", s.model.version],
    ["threshold", s.model.threshold === null ? "-" : s.model.threshold.toFixed(4)],
    ["image store", mb(s.images.used_bytes) + " of " + mb(s.images.quota_bytes) +
      (s.images.dropped ? ", " + s.images.dropped + " dropped" : "")],
    ["up for", Math.round(s.uptime_s) + " s"],
  ];
  fillRows($("health-table").querySelector("tbody"), rows.map(([k, v]) => [k, String(v)]));
}

function outcome(part) {
  if (part.verdict === "pass") return "pass";
  if (part.verdict === "reject") return part.failsafe_reason ? "failsafe" : "reject";
  return "open";
}

async function refreshStrip() {
  const parts = await getJSON("/api/parts/recent");
  $("strip").replaceChildren(...parts.map((p) => {
    const s = el("span", null, outcome(p));
    s.title = "part " + p.uid + ": " + (p.verdict || "waiting") +
      (p.failsafe_reason ? " (" + p.failsafe_reason + ")" : "") +
      (p.score !== null ? ", score " + p.score.toFixed(3) : "");
    return s;
  }));
}

async function refreshAlarms() {
  const a = await getJSON("/api/alarms");
  const badge = $("alarm-count");
  badge.hidden = a.active.length === 0;
  badge.textContent = a.active.length;
  if (view !== "alarms") return;
  const row = (x) => [clock(x.time), x.kind, x.detail];
  fillRows($("alarms-active").querySelector("tbody"), a.active.map(row));
  fillRows($("alarms-recent").querySelector("tbody"), a.recent.map(row));
}

function card(part) {
  const c = el("div", null, "card");
  c.dataset.uid = part.uid;
  const img = el("img");
  img.alt = "part " + part.uid;
  img.loading = "lazy";
  img.src = "/api/parts/" + part.uid + "/thumb.jpg";
  const score = part.score === null ? "-" : part.score.toFixed(3);
  c.append(img, el("p", "#" + part.uid + " " + (part.failsafe_reason || part.verdict) +
    " " + score + " " + clock(part.verdict_time)));
  c.addEventListener("click", () => openPart(part.uid));
  return c;
}

async function refreshRejects() {
  if (view !== "rejects") return;
  const r = await getJSON("/api/rejects");
  $("reject-grid").replaceChildren(...r.rejects.map(card));
  $("pass-grid").replaceChildren(...r.passes.map(card));
}

async function openPart(uid) {
  dialogUid = uid;
  const row = await getJSON("/api/parts/" + uid);
  $("part-image").src = row.image ? "/api/parts/" + uid + "/image" : "";
  $("part-row").textContent = JSON.stringify(row, null, 1);
  $("review-result").textContent = "";
  $("part-dialog").showModal();
}

async function review(truth) {
  try {
    const answer = await act("/api/parts/" + dialogUid + "/review", { truth });
    $("review-result").textContent = "recorded: " + answer.truth + " by " + answer.reviewer;
    $("review-result").className = "ok";
  } catch (e) {
    $("review-result").textContent = e.message;
    $("review-result").className = "error";
  }
}

async function acknowledge() {
  try {
    const answer = await act("/api/alarms/ack");
    $("ack-result").textContent = "acknowledged by " + answer.acknowledged_by;
    $("ack-result").className = "ok";
    refreshAlarms();
  } catch (e) {
    $("ack-result").textContent = e.message;
    $("ack-result").className = "error";
  }
}

function refreshSlow() {
  refreshStrip().catch(() => {});
  refreshAlarms().catch(() => {});
  refreshRejects().catch(() => {});
}

function remember(id) {
  const input = $(id);
  input.value = sessionStorage.getItem(id) || "";
  input.addEventListener("change", () => sessionStorage.setItem(id, input.value));
}

document.addEventListener("DOMContentLoaded", () => {
  // The view is in the address (#alarms ...): a link or a bookmark opens it.
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => { location.hash = button.dataset.view; });
  }
  window.addEventListener("hashchange", () => show(location.hash.slice(1) || "line"));
  remember("name");
  remember("token");
  $("who").addEventListener("submit", (e) => e.preventDefault());
  $("ack").addEventListener("click", acknowledge);
  $("review-defective").addEventListener("click", () => review("defective"));
  $("review-ok").addEventListener("click", () => review("ok"));
  $("close-dialog").addEventListener("click", () => $("part-dialog").close());
  if (location.hash) show(location.hash.slice(1));
  refreshStatus();
  refreshSlow();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshSlow, SLOW_EVERY_MS);
});
