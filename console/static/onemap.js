// citywatch one map (一张图), alarm board and cockpit (驾驶舱). Leaflet + markercluster, vendored.
// Markers are updated in place (one marker per device, icons swapped on state change) and lists are
// replaced, never appended, so a wall screen running for days holds what it shows and no more.
"use strict";
(function () {
  const page = document.body.dataset.page || "";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const tzOffsetMin = Number(document.body.dataset.tzOffsetMin || 0);
  const pad = (n) => String(n).padStart(2, "0");
  const fmtTime = (t) => { const d = new Date((t + tzOffsetMin * 60) * 1000); return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); };
  const el = (tag, attrs, ...kids) => { const e = document.createElement(tag); for (const [k, v] of Object.entries(attrs || {})) { if (k === "class") e.className = v; else e.setAttribute(k, v); } for (const k of kids) e.append(k); return e; };
  const getJSON = async (url) => { const r = await fetch(url, { credentials: "same-origin", headers: { "X-CSRF-Token": csrf } }); if (!r.ok) throw new Error(r.status + " " + url); return r.json(); };
  const debounce = (fn, ms) => { let t = null; return () => { if (t) return; t = setTimeout(() => { t = null; fn(); }, ms); }; };
  const GLYPH = { water_gauge: "水", manhole: "井", lamp: "灯", wim: "秤" };
  const RANK = { critical: 4, major: 3, minor: 2, offline: 1, online: 0 };

  // ---------------------------------------------------------------- map
  const mapEl = document.getElementById("map");
  let map = null, cluster = null;
  const markers = new Map(); // device id -> marker
  const icons = new Map(); // "kind|state" -> icon, shared by every marker of that look
  function icon(kind, state) {
    const key = kind + "|" + state;
    if (!icons.has(key)) icons.set(key, L.divIcon({ className: "mk k-" + kind + " s-" + state, html: GLYPH[kind] || "•", iconSize: [24, 24], iconAnchor: [12, 12] }));
    return icons.get(key);
  }
  function clusterIcon(c) {
    let worst = "online";
    for (const m of c.getAllChildMarkers()) if (RANK[m.options.state] > RANK[worst]) worst = m.options.state;
    const n = c.getChildCount();
    return L.divIcon({ className: "cl s-" + worst, html: "<span>" + n + "</span>", iconSize: n > 999 ? [52, 52] : [42, 42] });
  }
  async function popup(m) {
    const d = await getJSON("/api/v1/map/devices/" + encodeURIComponent(m.options.device));
    const box = el("div", { class: "pop" }, el("strong", {}, d.id + " · " + d.kind_label));
    if (d.address) box.append(el("div", { class: "addr" }, d.address));
    box.append(el("div", {}, d.online ? "在线 online" : "离线 offline"));
    const t = el("table", {});
    for (const v of d.latest) t.append(el("tr", {}, el("th", {}, v.label), el("td", { class: "num" }, v.text), el("td", {}, fmtTime(v.ts))));
    box.append(t);
    const links = el("div", { class: "links" }, el("a", { href: "/devices/" + encodeURIComponent(d.id) }, "设备详情 Device"));
    if (d.open_case) links.append(" · ", el("a", { href: "/cases/" + encodeURIComponent(d.open_case.id) }, "案件 Case " + d.open_case.id + " " + d.open_case.category_name));
    box.append(links);
    m.setPopupContent(box);
  }
  async function refreshMarkers() {
    const data = await getJSON("/api/v1/map/devices");
    const seen = new Set(), add = [];
    for (const [id, kind, lat, lon, state] of data.rows) {
      seen.add(id);
      const m = markers.get(id);
      if (!m) {
        const nm = L.marker([lat, lon], { icon: icon(kind, state), device: id, kind, state, title: id });
        nm.bindPopup("…", { maxWidth: 320 });
        nm.on("popupopen", () => popup(nm));
        markers.set(id, nm);
        add.push(nm);
      } else if (m.options.state !== state) {
        m.options.state = state;
        m.setIcon(icon(kind, state));
        cluster.refreshClusters(m);
      }
    }
    const gone = [];
    for (const [id, m] of markers) if (!seen.has(id)) { gone.push(m); markers.delete(id); }
    if (gone.length) cluster.removeLayers(gone);
    if (add.length) cluster.addLayers(add);
    const note = document.getElementById("map-note");
    if (note) note.textContent = data.rows.length + " 台设备 devices" + (data.unplaced ? " · " + data.unplaced + " 台无坐标 without coordinates" : "");
    return data;
  }
  async function initMap() {
    if (!mapEl || !window.L) return;
    const cfg = await getJSON("/api/v1/map/config");
    map = L.map(mapEl, { zoomControl: true, attributionControl: true, maxZoom: 19, minZoom: 3 });
    map.attributionControl.setPrefix("Leaflet");
    const bases = {};
    let districtLayer = null;
    for (const b of cfg.base_layers) {
      const group = L.layerGroup(b.urls.map((u) => L.tileLayer(u, { subdomains: b.subdomains || "abc", maxZoom: b.max_zoom, attribution: b.attribution })));
      bases[b.name] = group;
    }
    const names = Object.keys(bases);
    const overlays = {};
    if (names.length) bases[names[0]].addTo(map);
    if (cfg.district) {
      const doc = await getJSON("/api/v1/map/district");
      const streetLabels = [];
      const style = (f) => ({ grid: { className: "grid", color: "#4a6d8c", weight: 2, dashArray: "6 4", fillColor: "#0b5cad", fillOpacity: 0.04 },
        river: { className: "river", color: "#4dabf7", weight: 14, opacity: 0.8 },
        street: { className: "street", color: names.length ? "#868e96" : "#fff", weight: names.length ? 2 : 7, opacity: names.length ? 0.5 : 1 } }[f.properties.layer]
        || { color: "#adb5bd", weight: 1 });
      const district = districtLayer = L.geoJSON(doc, { style, interactive: false,
        filter: (f) => f.properties.layer !== "device",  // surveyed addresses, not drawn: the markers are the devices
        onEachFeature: (f, layer) => {
        const p = f.properties;
        if (p.layer === "grid") layer.bindTooltip(p.name + " " + p.grid, { permanent: true, direction: "center", className: "grid-label" });
        else if (p.layer === "street" && p.name) {  // a fifth along the street: clear of the grid labels in the middle
          const [a, b] = f.geometry.coordinates;
          streetLabels.push(L.tooltip({ permanent: true, direction: "center", className: "street-label" })
            .setLatLng([a[1] + 0.2 * (b[1] - a[1]), a[0] + 0.2 * (b[0] - a[0])]).setContent(p.name));
        } else if (p.name) layer.bindTooltip(p.name, { sticky: true, className: "street-label " + p.layer });
      } }).addTo(map);
      L.layerGroup(streetLabels).addTo(map);
      if (!names.length) mapEl.classList.add("vector-base");
      overlays["示例城区 district"] = district;
    }
    // high-incidence places of the last 30 days (统计 readers only): a heat overlay, off until chosen
    try {
      const heat = await getJSON("/api/v1/statistics/heat?days=30");
      const top = heat.max_cases || 1;
      overlays["案件热力 case heat (30 d)"] = L.layerGroup(heat.rows.map(([lat, lon, n, addr]) => L.circleMarker([lat, lon],
        { className: "heat-spot", radius: 8 + 22 * Math.sqrt(n / top), stroke: false, fillColor: "#d92d20", fillOpacity: 0.15 + 0.45 * n / top })
        .bindTooltip((addr || "") + " · " + n + " 件 cases")));
    } catch (e) { /* no statistics permission: no heat overlay */ }
    if (names.length > 1 || Object.keys(overlays).length) L.control.layers(names.length > 1 ? bases : {}, overlays, { collapsed: true }).addTo(map);
    const first = await getJSON("/api/v1/map/devices");
    // the clusters need a view first: the configured one, else the district, else the devices
    if (cfg.center) map.setView(cfg.center, cfg.zoom);
    else if (districtLayer) map.fitBounds(districtLayer.getBounds());
    else if (first.rows.length) map.fitBounds(L.latLngBounds(first.rows.map((r) => [r[2], r[3]])));
    else map.setView([30.25, 120.15], cfg.zoom);
    cluster = L.markerClusterGroup({ chunkedLoading: true, disableClusteringAtZoom: cfg.cluster_below_zoom, iconCreateFunction: clusterIcon,
      showCoverageOnHover: false, maxClusterRadius: 50 });
    map.addLayer(cluster);
    await refreshMarkers();
    const again = debounce(refreshMarkers, 2000);
    document.addEventListener("cw:alarm", again);
    document.addEventListener("cw:gap", again);
    setInterval(refreshMarkers, 60000); // online/offline changes arrive without an alarm
  }

  // ---------------------------------------------------------------- alarm board
  const rows = document.getElementById("alarm-rows");
  const filters = document.getElementById("board-filters");
  const counts = document.getElementById("kind-counts");
  async function refreshBoard(freshId) {
    const q = new URLSearchParams();
    if (filters) for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    const data = await getJSON("/api/v1/board?" + q);
    const canAck = rows.dataset.canAck === "1";
    document.getElementById("alarm-count").textContent = data.total;
    const out = [];
    for (const a of data.items) {
      const acts = el("td", { class: "acts" });
      if (canAck) {
        acts.append(el("input", { class: "ack-note", name: "note", maxlength: "500", placeholder: "备注 note", "aria-label": "备注 note" }));
        if (a.state !== "acknowledged") acts.append(el("button", { class: "ack", "data-alarm": a.alarm_id }, "确认 Ack"));
        if (a.clearable) acts.append(el("button", { class: "clear", "data-alarm": a.alarm_id }, "消除 Clear"));
      }
      out.push(el("tr", { class: "sev-" + a.severity + (a.alarm_id === freshId ? " fresh" : ""), "data-alarm": a.alarm_id, "data-rule": a.rule, "data-kind": a.kind },
        el("td", {}, el("span", { class: "badge sev-" + a.severity }, a.severity_label), el("br", {}),
          el("small", { class: "ackstate" }, (a.state === "acknowledged" ? "已确认 acknowledged" : "未确认 open") + (a.acked_by ? " (" + a.acked_by + ")" : ""))),
        el("td", {}, el("a", { href: "/devices/" + encodeURIComponent(a.device) }, a.device), el("br", {}), el("small", {}, a.address || a.kind_label)),
        el("td", {}, a.rule_label, a.repeats > 1 ? el("span", { class: "repeats", title: "重复次数 repeats" }, " ×" + a.repeats) : ""),
        el("td", { class: "num" }, a.value_text), el("td", {}, fmtTime(a.raised_at)), acts));
    }
    if (!out.length) out.push(el("tr", { class: "empty" }, el("td", { colspan: "6" }, "无活动告警 No active alarms")));
    // keep a note someone is typing across a live refresh
    const typing = document.activeElement && document.activeElement.classList.contains("ack-note") ? document.activeElement : null;
    if (typing && typing.value) return;
    rows.replaceChildren(...out);
    if (counts) renderCounts(counts, data.counts);
  }
  const KIND_LABEL = { water_gauge: "积水监测 water gauge", manhole: "井盖 manhole cover", lamp: "路灯 street lamp", wim: "治超称重 WIM scale" };
  const SEV_LABEL = { critical: "严重 critical", major: "重要 major", minor: "一般 minor" };
  function renderCounts(ul, data) {
    const items = Object.keys(data).sort().map((k) => {
      const li = el("li", { class: "kind-count", "data-kind": k }, el("span", { class: "k" }, KIND_LABEL[k] || k));
      for (const s of ["critical", "major", "minor"]) if (data[k][s]) li.append(" ", el("span", { class: "badge sev-" + s }, SEV_LABEL[s] + " " + data[k][s]));
      return li;
    });
    ul.replaceChildren(...(items.length ? items : [el("li", { class: "kind-count none" }, "无活动告警 No active alarms")]));
  }

  // ---------------------------------------------------------------- new critical alarm: banner and sound
  const banner = document.getElementById("alert-banner");
  const mute = document.getElementById("mute");
  let muted = localStorage.getItem("cw-mute") === "1" || (mute && mute.dataset.sound === "0");
  const showMute = () => { if (mute) { mute.setAttribute("aria-pressed", String(muted)); mute.textContent = muted ? "♪ 已静音 Muted" : "♪ 声音 Sound on"; } };
  if (mute) mute.addEventListener("click", () => { muted = !muted; localStorage.setItem("cw-mute", muted ? "1" : "0"); showMute(); });
  showMute();
  let audio = null;
  function beep() {
    if (muted) return;
    try {
      audio = audio || new AudioContext();
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = 880; g.gain.value = 0.2; o.connect(g); g.connect(audio.destination);
      o.start(); o.stop(audio.currentTime + 0.6);
    } catch (e) { /* no audio device: the banner still shows */ }
  }
  function announce(a) {
    if (!banner || a.severity !== "critical" || (a.kind !== "raised" && a.kind !== "escalated")) return;
    banner.hidden = false;
    banner.textContent = "严重告警 Critical alarm: " + a.device + " · " + a.rule + " · " + fmtTime(a.t);
    banner.classList.remove("pulse"); void banner.offsetWidth; banner.classList.add("pulse");
    beep();
  }
  if (banner) banner.addEventListener("click", () => { banner.hidden = true; });

  // ---------------------------------------------------------------- cockpit
  let gaugeChart = null;
  function pct(x) { return x === null || x === undefined ? "—" : Math.round(x * 100) + "%"; }
  async function refreshCockpit() {
    const d = await getJSON("/api/v1/cockpit");
    const set = (id, v) => { const e = document.getElementById(id); if (e) e.textContent = v; };
    set("kpi-alarms", d.alarms_total);
    set("kpi-online", d.devices.online + "/" + d.devices.total);
    const byKind = document.getElementById("kpi-alarms-by-kind");
    if (byKind) byKind.textContent = Object.entries(d.alarms_by_kind).map(([k, v]) => (KIND_LABEL[k] || k).split(" ")[0] + " " + (v.critical + v.major + v.minor)).join(" · ");
    if (d.cases) { set("kpi-open", d.cases.open); set("kpi-overdue", d.cases.overdue); }
    if (d.on_time) { set("kpi-ontime-today", pct(d.on_time.today)); set("kpi-ontime-30", pct(d.on_time.days30)); }
    const top = document.getElementById("cp-top");
    if (top) top.replaceChildren(...d.top.map((a) => el("li", { class: "sev-" + a.severity }, el("span", { class: "badge sev-" + a.severity }, a.severity_label), " " + a.device + " · " + a.rule_label + " " + a.value_text + (a.address ? " · " + a.address : ""))));
    const cases = document.getElementById("cp-cases");
    if (cases && d.cases) cases.replaceChildren(...d.cases.recent.map((c) => el("li", { class: c.overdue ? "hot" : "" }, fmtTime(c.created_at) + " " + c.category_name + " · " + c.unit_name + " · " + c.state_label)));
    const box = document.getElementById("cp-gauges");
    if (box && window.echarts) {
      gaugeChart = gaugeChart || window.echarts.init(box, null, { renderer: "canvas" });
      gaugeChart.setOption({ animation: false, grid: { left: 50, right: 16, top: 40, bottom: 24 }, legend: { top: 0, textStyle: { color: "#dde", fontSize: 14 } },
        xAxis: { type: "category", show: false, data: (d.gauges[0] || { trend: [] }).trend.map((_v, i) => i) },
        yAxis: { type: "value", name: "m", axisLabel: { color: "#dde", fontSize: 14 } },
        series: d.gauges.map((g) => ({ name: g.device, type: "line", showSymbol: false, data: g.trend })) }, true);
    }
    set("cp-clock", fmtTime(d.t));
  }

  // ---------------------------------------------------------------- start
  document.addEventListener("cw:alarm", (ev) => announce(ev.detail));
  if (rows) {
    const again = debounce(() => refreshBoard(), 1000);
    document.addEventListener("cw:alarm", (ev) => { if (ev.detail.kind === "raised") refreshBoard(ev.detail.alarm_id); else again(); });
    document.addEventListener("cw:gap", again);
    if (filters) filters.addEventListener("change", () => refreshBoard());
  }
  if (page === "overview" || page === "cockpit") initMap().catch((e) => { if (mapEl) mapEl.textContent = "地图加载失败 map failed: " + (e && (e.stack || e.message || e)); });
  if (page === "cockpit") {
    const s = document.createElement("script");
    s.src = "/static/vendor/echarts/echarts.min.js";
    s.onload = () => refreshCockpit();
    document.head.append(s);
    const again = debounce(refreshCockpit, 3000);
    document.addEventListener("cw:alarm", again);
    setInterval(refreshCockpit, 15000);
  }
})();
