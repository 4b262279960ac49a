// Lamp page: confirm, send one command (lamp or circuit), show each lamp's result and read-back value.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const box = document.getElementById("lamp-result");
  if (!box) return;
  const rows = document.getElementById("lamp-result-rows");
  const what = document.getElementById("lamp-result-what");
  const STATUS = { success: "成功 success", refused: "拒绝 refused", timed_out: "超时 timed out" };
  const VERB = { on: "开灯 switch on", off: "关灯 switch off", dim: "调光 dim" };
  const td = (text, cls) => { const e = document.createElement("td"); e.textContent = text; if (cls) e.className = cls; return e; };
  const readback = (rb) => ("dim_level_pct" in rb ? rb.dim_level_pct + " %" : "relay" in rb ? (rb.relay ? "开 on" : "关 off") : "—");

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.lamp-cmd");
    if (!b) return;
    const body = { action: b.dataset.action, confirm: true };
    const target = b.dataset.device ? (body.device = b.dataset.device) : "回路 circuit " + (body.circuit = b.dataset.circuit);
    if (body.action === "dim") body.level_pct = Number(document.getElementById(b.dataset.level).value);
    const label = VERB[body.action] + (body.action === "dim" ? " " + body.level_pct + " %" : "") + " · " + target;
    if (!window.confirm("确认 Confirm: " + label + "?")) return;
    document.querySelectorAll("button.lamp-cmd").forEach((x) => { x.disabled = true; });
    box.hidden = false;
    what.textContent = label + " … 发送中 sending";
    rows.replaceChildren();
    try {
      const r = await fetch("/api/v1/lamps/commands", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
      const s = data.summary;
      what.textContent = label + " — " + s.success + " 成功 ok, " + s.refused + " 拒绝 refused, " + s.timed_out + " 超时 timed out";
      for (const o of data.results) {
        const tr = document.createElement("tr");
        tr.className = "res-" + o.status;
        tr.dataset.lamp = o.device;
        tr.append(td(o.device), td(o.gateway), td(STATUS[o.status] || o.status, "status"), td(readback(o.readback), "readback"),
          td([o.error, o.detail].filter(Boolean).join(": ")));
        rows.append(tr);
        const cell = document.querySelector('tr[data-lamp="' + o.device + '"] td.' + ("dim_level_pct" in o.readback ? "dim" : "relay"));
        if (cell && o.status === "success") cell.textContent = readback(o.readback);
      }
    } catch (err) {
      what.textContent = label + " — 失败 failed: " + err.message;
    } finally {
      document.querySelectorAll("button.lamp-cmd").forEach((x) => { x.disabled = false; });
    }
  });
})();
