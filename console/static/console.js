// citywatch console: live updates over SSE, acknowledgements, workflow actions, SVG charts.
// No framework, no build step, no CDN.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const page = document.body.dataset.page || "";
  const SEV = { critical: "严重 critical", major: "重要 major", minor: "一般 minor" };
  // times in the console's configured zone (as the server renders them), not the browser's
  const tzOffsetMin = Number(document.body.dataset.tzOffsetMin || 0);
  const pad = (n) => String(n).padStart(2, "0");
  const fmtTime = (t) => { const d = new Date((t + tzOffsetMin * 60) * 1000); return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); };
  const el = (tag, attrs, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) { if (k === "class") e.className = v; else e.setAttribute(k, v); } for (const k of kids) e.append(k); return e; };

  async function api(method, url, body) {
    const r = await fetch(url, { method, credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: body ? JSON.stringify(body) : undefined });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
    return data;
  }

  // ---------------------------------------------------------------- alarms (overview)
  const alarmRows = document.getElementById("alarm-rows");
  async function refreshAlarms(freshId) {
    if (!alarmRows) return;
    const data = await api("GET", "/api/v1/alarms");
    const canAck = alarmRows.dataset.canAck === "1";
    alarmRows.replaceChildren();
    document.getElementById("alarm-count").textContent = data.total;
    if (!data.items.length) alarmRows.append(el("tr", { class: "empty" }, el("td", { colspan: "7" }, "无活动告警 No active alarms")));
    for (const a of data.items) {
      const btn = canAck && a.state !== "acknowledged" ? el("button", { class: "ack", "data-alarm": a.alarm_id }, "确认 Acknowledge") : "";
      const tr = el("tr", { class: "sev-" + a.severity + (a.alarm_id === freshId ? " fresh" : ""), "data-alarm": a.alarm_id },
        el("td", {}, el("span", { class: "badge sev-" + a.severity }, SEV[a.severity] || a.severity)),
        el("td", {}, el("a", { href: "/devices/" + a.device }, a.device)), el("td", {}, a.rule),
        el("td", {}, a.value === null ? "—" : Number(a.value).toPrecision(3)), el("td", {}, fmtTime(a.raised_at)),
        el("td", {}, (a.state === "acknowledged" ? "已确认 acknowledged" : "未确认 unacknowledged") + (a.acked_by ? " (" + a.acked_by + ")" : "")),
        el("td", {}, btn));
      alarmRows.append(tr);
      const dot = document.getElementById("dot-" + a.device);
      if (dot) dot.setAttribute("class", dot.getAttribute("class").replace(/ (online|offline|sev-\w+)$/, "") + " sev-" + a.severity);
    }
  }
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.ack");
    if (!b) return;
    b.disabled = true;
    try { await api("POST", "/api/v1/alarms/" + encodeURIComponent(b.dataset.alarm) + "/ack", { note: "" }); b.textContent = "已发送 sent"; }
    catch (e) { b.disabled = false; b.textContent = "重试 retry: " + e.message; }
  });

  // ---------------------------------------------------------------- case actions
  let reloading = false;  // our own action reloads the page; the live echo of it must not reload it again
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.act");
    if (!b) return;
    const form = b.closest("form.actions");
    const err = form.querySelector(".error");
    form.querySelectorAll("button").forEach((x) => (x.disabled = true));
    try {
      await api("POST", "/api/v1/cases/" + encodeURIComponent(form.dataset.case) + "/actions", Object.assign({ action: b.dataset.action, note: form.note.value },
        form.override_reason && form.override_reason.value.trim() ? { override_reason: form.override_reason.value } : {},
        b.dataset.action === "reassign" && form.unit ? { unit: form.unit.value } : {}));
      reloading = true;
      location.reload();
    } catch (e) { err.hidden = false; err.textContent = e.message; form.querySelectorAll("button").forEach((x) => (x.disabled = false)); }
  });

  // ---------------------------------------------------------------- charts
  async function drawChart(box) {
    const svg = box.querySelector("svg.plot");
    const metric = (box.querySelector("select.metric") || {}).value || box.dataset.metric || "depth";
    const now = Date.now() / 1000;
    const end = box.dataset.end ? Number(box.dataset.end) : now;
    const start = box.dataset.start ? Number(box.dataset.start) : end - Number(box.dataset.span || 21600);
    const q = new URLSearchParams({ metric, start: String(start), end: String(end), max_points: "400" });
    let data;
    try { data = await api("GET", "/api/v1/devices/" + encodeURIComponent(box.dataset.device) + "/readings?" + q); }
    catch (e) { svg.replaceChildren(); svg.append(svgEl("text", { x: 20, y: 30 }, "无数据 no data: " + e.message)); return; }
    const W = 800, H = 260, L = 50, R = 10, T = 10, B = 30;
    svg.replaceChildren();
    const pts = data.points;
    if (!pts.length) { svg.append(svgEl("text", { x: 20, y: 30 }, "此范围无数据 no data in this range")); return; }
    let lo = Math.min(...pts.map((p) => p[2])), hi = Math.max(...pts.map((p) => p[3]));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    svg.append(svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    for (let i = 0; i <= 4; i++) { const v = lo + ((hi - lo) * i) / 4; svg.append(svgEl("text", { x: 4, y: y(v) + 4 }, v.toPrecision(3))); }
    for (let i = 0; i <= 4; i++) { const t = start + ((end - start) * i) / 4; svg.append(svgEl("text", { x: x(t), y: H - 10, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, fmtTime(t))); }
    const band = pts.map((p) => x(p[0]) + "," + y(p[3])).concat(pts.slice().reverse().map((p) => x(p[0]) + "," + y(p[2])));
    svg.append(svgEl("polygon", { class: "band", points: band.join(" ") }));
    svg.append(svgEl("polyline", { class: "line", points: pts.map((p) => x(p[0]) + "," + y(p[1])).join(" ") }));
    if (box.dataset.mark) { const mx = x(Number(box.dataset.mark)); svg.append(svgEl("line", { class: "mark", x1: mx, y1: T, x2: mx, y2: H - B })); }
    svg.setAttribute("aria-label", metric + " " + pts.length + " points");
  }
  function svgEl(tag, attrs, text) { const e = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; }
  document.querySelectorAll(".chart").forEach((box) => {
    drawChart(box);
    box.querySelectorAll("button[data-span]").forEach((b) => b.addEventListener("click", () => {
      box.dataset.span = b.dataset.span;
      box.querySelectorAll("button[data-span]").forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
      drawChart(box);
    }));
    const sel = box.querySelector("select.metric");
    if (sel) sel.addEventListener("change", () => drawChart(box));
  });

  // ---------------------------------------------------------------- live feed
  const state = document.getElementById("live-state");
  if (state && window.EventSource) {
    const es = new EventSource("/api/v1/live");
    es.onopen = () => { state.textContent = "● 实时 live"; state.classList.add("on"); };
    es.onerror = () => { state.textContent = "● 重连中 reconnecting"; state.classList.remove("on"); };
    es.addEventListener("alarm", (ev) => { const a = JSON.parse(ev.data); if (page === "overview") refreshAlarms(a.alarm_id); });
    es.addEventListener("gap", () => { if (page === "overview") refreshAlarms(); });
    es.addEventListener("reading", (ev) => {
      for (const r of JSON.parse(ev.data).readings) {
        document.querySelectorAll('tr[data-device="' + CSS.escape(r.device) + '"] td[data-metric="' + CSS.escape(r.metric) + '"]').forEach((td) => {
          td.textContent = r.metric === "depth" ? Number(r.value).toFixed(2) : Number(r.value).toPrecision(3);
        });
      }
    });
    es.addEventListener("case", (ev) => {
      const c = JSON.parse(ev.data);
      const box = document.querySelector("section[data-case]");
      if (!reloading && page === "case" && box && box.dataset.case === c.id && document.getElementById("case-state").textContent !== c.state_label) { reloading = true; location.reload(); }
      if (page === "cases") { const n = document.querySelector("h1 .count"); if (n) n.classList.add("hot"); }
    });
  }
})();
