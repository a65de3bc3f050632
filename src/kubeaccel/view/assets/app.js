// kubeaccel ui: renders the server's view document. Every server string goes in through textContent
// (never as HTML), so a name such as <script> is shown as text, not run.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function state(device) {
  if (device.health !== "Healthy") return "unhealthy";
  return device.holder ? "held" : "free";
}

function deviceCell(device) {
  const kind = state(device);
  const label = `${device.device}${device.index && device.index !== device.device ? " (" + device.index + ")" : ""}`;
  const words = kind === "unhealthy" ? `${device.health}` : kind;
  const cell = el("td", {
    class: `device ${kind}`, role: "gridcell", tabindex: "-1",
    "data-device": device.device, "data-node": device.node, "data-health": device.health, "data-state": kind,
  });
  cell.append(el("span", { class: "name" }, label),
              el("span", { class: "state" }, `${device.resource} · ${words} · ${device.mode}`));
  if (device.holder) cell.append(el("span", { class: "holder" }, `held by ${device.holder}${device.app ? " (" + device.app + ")" : ""}`));
  cell.setAttribute("aria-label", `${device.node} ${device.resource} ${label}: ${words}` +
                    (device.holder ? `, held by ${device.holder}` : ""));
  return cell;
}

let focused = null;  // [row, column] of the cell that has the roving tab stop

function renderGrid(nodes) {
  const body = document.querySelector("#grid tbody");
  const rows = nodes.map((node) => {
    const row = el("tr", { role: "row", "data-node": node.name }, el("th", { scope: "row" }, node.name));
    node.devices.forEach((d) => row.append(deviceCell(d)));
    return row;
  });
  body.replaceChildren(...rows);
  const cells = body.querySelectorAll("td.device");
  if (cells.length === 0) return;
  const [r, c] = focused || [0, 0];
  const target = cellAt(r, c) || cells[0];
  target.tabIndex = 0;
  if (focused && document.activeElement === document.body) target.focus();
}

function cellAt(r, c) {
  const row = document.querySelectorAll("#grid tbody tr")[r];
  return row ? row.querySelectorAll("td.device")[c] : undefined;
}

function moveFocus(event) {
  const cell = event.target.closest("td.device");
  if (!cell) return;
  const row = cell.parentElement;
  const rows = [...document.querySelectorAll("#grid tbody tr")];
  let r = rows.indexOf(row);
  let c = [...row.querySelectorAll("td.device")].indexOf(cell);
  const moves = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0] };
  if (event.key === "Home") c = 0;
  else if (event.key === "End") c = row.querySelectorAll("td.device").length - 1;
  else if (moves[event.key]) { r += moves[event.key][0]; c += moves[event.key][1]; }
  else return;
  event.preventDefault();
  const next = cellAt(r, c) || cellAt(r, Math.max(0, (rows[r] || row).querySelectorAll("td.device").length - 1));
  if (!next) return;
  cell.tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
  focused = [rows.indexOf(next.parentElement), [...next.parentElement.querySelectorAll("td.device")].indexOf(next)];
}

function renderUnavailable(problems) {
  const box = document.getElementById("unavailable");
  if (!problems.length) { box.replaceChildren(); return; }
  const list = el("ul", { class: "problems" });
  problems.forEach((p) => list.append(el("li", {}, `${p.node || "cluster"} · ${p.source}: ${p.reason}` + (p.hint ? ` (${p.hint})` : ""))));
  box.replaceChildren(el("h3", {}, "Unavailable (their devices are not shown)"), list);
}

function renderApps(apps) {
  const box = document.getElementById("apps");
  if (!apps.length) { box.replaceChildren(el("p", {}, "No Spark applications.")); return; }
  box.replaceChildren(...apps.map((app) => {
    const table = el("table", { "data-app": app.app });
    table.append(el("caption", {}, `${app.namespace} · ${app.name || app.app} (${app.app}) · ${app.phase}`));
    table.append(el("tr", {}, el("th", { scope: "col" }, "pod"), el("th", { scope: "col" }, "role"),
                    el("th", { scope: "col" }, "state"), el("th", { scope: "col" }, "node"),
                    el("th", { scope: "col" }, "devices")));
    app.pods.forEach((pod) => {
      const devices = pod.devices.map((d) => `${d.resource} ${d.device}${d.index ? " (" + d.index + ")" : ""}` +
                                      (d.health !== "Healthy" ? ` ${d.health}` : "")).join(", ");
      const stateCell = el("td", {}, pod.phase);
      if (pod.reason) stateCell.append(el("span", { class: "reason" }, ` — ${pod.reason}`));
      table.append(el("tr", { "data-pod": pod.name }, el("td", {}, pod.name), el("td", {}, pod.role || "-"),
                      stateCell, el("td", {}, pod.node || "-"), el("td", {}, devices || "-")));
    });
    return el("div", { class: "app" }, table);
  }));
}

function renderTenants(tenants) {
  const box = document.getElementById("tenants");
  if (!tenants.length) { box.replaceChildren(el("p", {}, "No tenants.")); return; }
  const table = el("table", {}, el("tr", {}, el("th", { scope: "col" }, "tenant"), el("th", { scope: "col" }, "namespace"),
                                   el("th", { scope: "col" }, "resource"), el("th", { scope: "col" }, "used / hard")));
  tenants.forEach((t) => {
    const quota = t.quota.length ? t.quota : [{ resource: "-", used: "-", hard: "no quota" }];
    quota.forEach((q) => table.append(el("tr", {}, el("td", {}, t.tenant), el("td", {}, t.namespace),
                                         el("td", {}, q.resource), el("td", {}, `${q.used} / ${q.hard}`))));
  });
  box.replaceChildren(table);
}

function render(doc) {
  renderGrid(doc.nodes || []);
  renderUnavailable(doc.unavailable || []);
  renderApps(doc.apps || []);
  renderTenants(doc.tenants || []);
  const status = document.getElementById("status");
  status.classList.toggle("error", Boolean(doc.error));
  status.textContent = doc.error ? `cluster unreachable, showing the last view: ${doc.error}`
                                 : `live · updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.rendered = String((Number(document.body.dataset.rendered) || 0) + 1);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("grid").addEventListener("keydown", moveFocus);
  document.getElementById("grid").addEventListener("focusin", (event) => {
    const cell = event.target.closest("td.device");
    if (!cell) return;
    const rows = [...document.querySelectorAll("#grid tbody tr")];
    focused = [rows.indexOf(cell.parentElement), [...cell.parentElement.querySelectorAll("td.device")].indexOf(cell)];
  });
  const events = new EventSource("/events");
  events.addEventListener("view", (event) => render(JSON.parse(event.data)));
  events.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
});
