// citywatch console: live updates over SSE, acknowledgements, workflow actions, charts (vendored ECharts).
// No framework, no build step at run time, no CDN.
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

  // ---------------------------------------------------------------- alarm acknowledgement and manual clear
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.ack, button.clear");
    if (!b) return;
    const clear = b.classList.contains("clear");
    const input = b.closest("tr, form") && b.closest("tr, form").querySelector("input.ack-note");
    const note = input ? input.value.trim() : "";
    if (clear && !note) { if (input) { input.focus(); input.placeholder = "请填写消除原因 reason required"; } return; }
    b.disabled = true;
    try {
      await api("POST", "/api/v1/alarms/" + encodeURIComponent(b.dataset.alarm) + (clear ? "/clear" : "/ack"), { note });
      b.textContent = "已发送 sent";
    } catch (e) { b.disabled = false; b.textContent = "重试 retry: " + e.message; }
  });

  // ---------------------------------------------------------------- case photos (raw image body, type checked server-side)
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.upload");
    if (!b) return;
    const form = b.closest("form.photo-upload");
    const file = form.querySelector("input[type=file]").files[0];
    const err = form.querySelector(".error");
    if (!file) { err.hidden = false; err.textContent = "请选择照片 choose a photo"; return; }
    b.disabled = true;
    try {
      const url = "/api/v1/cases/" + encodeURIComponent(form.dataset.case) + "/media?stage=" + encodeURIComponent(form.querySelector("select").value);
      const r = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "Content-Type": file.type || "image/jpeg", "X-CSRF-Token": csrf }, body: file });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
      window.location.reload();
    } catch (e) { b.disabled = false; err.hidden = false; err.textContent = e.message; }
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

  // ---------------------------------------------------------------- charts (ECharts, vendored)
  const SEV_COLOR = { critical: "#b00020", major: "#d9480f", minor: "#b08800" };
  function loadScript(src) {
    return new Promise((ok, fail) => { const s = el("script", { src }); s.onload = ok; s.onerror = fail; document.head.append(s); });
  }
  const fmtAxis = (v) => fmtTime(v / 1000);
  async function drawChart(box, chart) {
    const sel = box.querySelector("select.metric");
    const metric = (sel && sel.value) || box.dataset.metric || "depth";
    const label = sel && sel.selectedOptions.length ? sel.selectedOptions[0].textContent : metric;
    const now = Date.now() / 1000;
    const span = box.dataset.span || (box.dataset.start ? "event" : "21600");
    let start, end;
    if (span === "event" && box.dataset.start) { start = Number(box.dataset.start); end = Number(box.dataset.end); }
    else { end = now; start = end - Number(span === "event" ? 21600 : span); }
    const q = new URLSearchParams({ metric, start: String(start), end: String(end), max_points: "600" });
    let data;
    try { data = await api("GET", "/api/v1/devices/" + encodeURIComponent(box.dataset.device) + "/readings?" + q); }
    catch (e) { chart.clear(); chart.setOption({ title: { text: "无数据 no data: " + e.message } }); return; }
    const pts = data.points;
    const unit = (document.querySelector('td[data-metric="' + CSS.escape(metric) + '"]') || { dataset: {} }).dataset.unit || "";
    const ths = JSON.parse(box.dataset.thresholds || "[]").filter((t) => t.metric === metric);
    const bands = JSON.parse(box.dataset.bands || "[]").filter((b) => b[1] >= start && b[0] <= end);
    const series = [
      { name: "范围 range", type: "line", data: pts.map((p) => [p[0] * 1000, p[2]]), lineStyle: { opacity: 0 }, stack: "band", symbol: "none", silent: true },
      { name: "范围 range", type: "line", data: pts.map((p) => [p[0] * 1000, p[3] - p[2]]), lineStyle: { opacity: 0 }, stack: "band", symbol: "none",
        areaStyle: { color: "rgba(11,92,173,.15)" }, silent: true },
      { name: label + (unit ? " (" + unit + ")" : ""), type: "line", data: pts.map((p) => [p[0] * 1000, p[1]]), showSymbol: false, lineStyle: { width: 2, color: "#0b5cad" },
        markLine: { symbol: "none", data: ths.filter((t) => t.kind === "level").map((t) => ({ yAxis: t.value, name: t.label, lineStyle: { color: SEV_COLOR[t.severity], type: "dashed" },
          label: { formatter: t.value + " " + unit + " " + t.severity, position: "insideEndTop" } })).concat(box.dataset.mark ? [{ xAxis: Number(box.dataset.mark) * 1000, lineStyle: { color: "#b00020" }, label: { formatter: "告警 alarm" } }] : []) },
        markArea: { silent: true, data: bands.map((b) => [{ xAxis: Math.max(b[0], start) * 1000, itemStyle: { color: SEV_COLOR[b[2]], opacity: 0.08 }, name: b[3] }, { xAxis: Math.min(b[1], end) * 1000 }]) } },
    ];
    // the axis reaches the highest threshold, so every alarm level is drawn even on a dry day
    const thMax = Math.max(-Infinity, ...ths.filter((t) => t.kind === "level").map((t) => t.value));
    const yAxis = [{ type: "value", scale: true, name: unit, axisLabel: { formatter: (v) => +v.toFixed(3) } }];
    if (thMax > Math.max(-Infinity, ...pts.map((p) => p[3]))) yAxis[0].max = +(thMax * 1.05).toFixed(3);
    if (box.dataset.rate === "1" && metric === "depth" && pts.length > 1) {
      const rate = [];
      for (let i = 1; i < pts.length; i++) rate.push([pts[i][0] * 1000, +(((pts[i][1] - pts[i - 1][1]) / (pts[i][0] - pts[i - 1][0])) * 3600 * 100).toFixed(1)]);
      const rth = ths.filter((t) => t.kind === "rate");
      series.push({ name: "涨速 rate of rise (cm/h)", type: "bar", yAxisIndex: 1, data: rate, itemStyle: { color: "rgba(217,72,15,.45)" },
        markLine: { symbol: "none", data: rth.map((t) => ({ yAxis: t.value * 100, lineStyle: { color: SEV_COLOR[t.severity], type: "dotted" }, label: { formatter: "预警 " + t.value * 100 + " cm/h" } })) } });
      yAxis.push({ type: "value", name: "cm/h", splitLine: { show: false } });
    }
    chart.setOption({
      animation: false, grid: { left: 60, right: 60, top: 40, bottom: 70 }, tooltip: { trigger: "axis" },
      legend: { top: 0, data: series.filter((s) => s.name !== "范围 range").map((s) => s.name) },
      toolbox: { right: 10, feature: { dataZoom: { yAxisIndex: "none", title: { zoom: "框选缩放 brush to zoom", back: "还原 back" } }, restore: { title: "还原 reset" } } },
      dataZoom: [{ type: "inside" }, { type: "slider", bottom: 10, labelFormatter: fmtAxis }],
      xAxis: { type: "time", min: start * 1000, max: end * 1000, axisLabel: { formatter: fmtAxis } }, yAxis, series,
    }, true);
    box.dataset.points = String(pts.length);
    box.dataset.window = start + "," + end;
  }
  const charts = document.querySelectorAll(".chart[data-device]");
  if (charts.length) loadScript("/static/vendor/echarts/echarts.min.js").then(() => charts.forEach((box) => {
    const chart = window.echarts.init(box.querySelector(".plot"), null, { renderer: "svg" });
    window.addEventListener("resize", () => chart.resize());
    drawChart(box, chart);
    box.querySelectorAll("button[data-span]").forEach((b) => b.addEventListener("click", () => {
      box.dataset.span = b.dataset.span;
      box.querySelectorAll("button[data-span]").forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
      drawChart(box, chart);
    }));
    const sel = box.querySelector("select.metric");
    if (sel) sel.addEventListener("change", () => drawChart(box, chart));
  }));

  // ---------------------------------------------------------------- live feed
  const state = document.getElementById("live-state");
  if (state && window.EventSource) {
    const es = new EventSource("/api/v1/live");
    es.onopen = () => { state.textContent = "● 实时 live"; state.classList.add("on"); };
    es.onerror = () => { state.textContent = "● 重连中 reconnecting"; state.classList.remove("on"); };
    // the map, board and cockpit (onemap.js) listen to these as DOM events
    const relay = (kind) => (ev) => document.dispatchEvent(new CustomEvent("cw:" + kind, { detail: ev.data ? JSON.parse(ev.data) : {} }));
    es.addEventListener("alarm", relay("alarm"));
    es.addEventListener("gap", relay("gap"));
    const DEC = { m: 2, deg: 1, V: 1, A: 2, W: 0, kWh: 1, "%": 0, h: 0 };
    es.addEventListener("reading", (ev) => {
      const data = JSON.parse(ev.data);
      for (const r of data.readings) {
        document.querySelectorAll('tr[data-device="' + CSS.escape(r.device) + '"] td[data-metric="' + CSS.escape(r.metric) + '"]').forEach((td) => {
          const unit = r.unit || "";
          td.textContent = Number(r.value).toFixed(DEC[unit] === undefined ? 2 : DEC[unit]) + (unit === "deg" ? "°" : unit ? " " + unit : "");
        });
      }
      document.dispatchEvent(new CustomEvent("cw:reading", { detail: data }));
    });
    es.addEventListener("case", (ev) => {
      const c = JSON.parse(ev.data);
      const box = document.querySelector("section[data-case]");
      if (!reloading && page === "case" && box && box.dataset.case === c.id && document.getElementById("case-state").textContent !== c.state_label) { reloading = true; location.reload(); }
      if (page === "cases") { const n = document.querySelector("h1 .count"); if (n) n.classList.add("hot"); }
    });
  }
})();
