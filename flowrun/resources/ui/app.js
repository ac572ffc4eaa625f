// flowrun's live page: one graph per running flow, updated by server-sent events.
// window.flowrunUI exposes the state for people poking around (and for tests).
(function () {
  "use strict";
  cytoscape.use(cytoscapeDagre);
  const ui = { flows: {}, current: null, cy: null, selected: null, thread: null, shape: "" };
  window.flowrunUI = ui;

  const $ = (sel) => document.querySelector(sel);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  const n = (v) => (v === null || v === undefined ? "-" : v);

  function label(s) {
    return `${s.id}\n${s.live ? "● live" : "○ " + s.state}  ↻${s.restarts}\n` +
      `in ${s.in_rate}/s  out ${s.out_rate}/s\nwait ${n(s.waiting)}  err ${n(s.errors)}`;
  }

  function makeGraph() {
    ui.cy = cytoscape({
      container: $("#graph"),
      wheelSensitivity: 0.2,
      style: [
        { selector: "node", style: {
          "shape": "round-rectangle", "width": 150, "height": 70, "label": "data(label)",
          "text-wrap": "wrap", "text-valign": "center", "font-size": 10,
          "background-color": "#e8f5e9", "border-width": 2, "border-color": "#2e7d32" } },
        { selector: "node[?mapper]", style: {
          "shape": "ellipse", "width": 120, "height": 60, "border-style": "dashed",
          "background-color": "#f3f4f7", "border-color": "#7a8394" } },
        { selector: "node[!live]", style: { "background-color": "#ffebee", "border-color": "#c62828" } },
        { selector: "node.selected", style: { "border-width": 4, "border-color": "#4a7dff" } },
        { selector: "node.onpath", style: { "underlay-color": "#ffb300", "underlay-opacity": 0.5, "underlay-padding": 6 } },
        { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle",
          "width": 2, "line-color": "#b0b7c3", "target-arrow-color": "#b0b7c3" } },
      ],
    });
    ui.cy.on("tap", "node", (e) => selectStep(e.target.id()));
  }

  function render() {
    const flow = ui.flows[ui.current];
    const nav = $("#flows");
    nav.innerHTML = Object.keys(ui.flows).map((f) =>
      `<button data-flow="${esc(f)}" class="${f === ui.current ? "active" : ""}">${esc(f)}</button>`).join("");
    if (!flow) { $("#summary").textContent = "no flow is running"; return; }
    // Same steps, same places: only the data changes (a redeployed step keeps its node).
    const shape = flow.steps.map((s) => s.id).join(">");
    if (shape !== ui.shape) {
      ui.cy.elements().remove();
      ui.cy.add(flow.steps.map((s) => ({ group: "nodes", data: { id: s.id } })));
      ui.cy.add(flow.edges.map(([a, b]) => ({ group: "edges", data: { id: a + "->" + b, source: a, target: b } })));
    }
    for (const s of flow.steps) {
      ui.cy.$id(s.id).data({ label: label(s), live: s.live, mapper: s.kind === "mapper", state: s.state });
    }
    if (shape !== ui.shape) {
      ui.cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 20, rankSep: 40 }).run();
      ui.cy.fit(undefined, 20);
      ui.shape = shape;
    }
    $("#summary").textContent = `${flow.flow}: ${flow.steps.length} real steps · ` +
      `errors queued ${n(flow.errors_queued)} · dead letters ${n(flow.dead_letters)}`;
    $("#steps tbody").innerHTML = flow.steps.map((s) => `
      <tr data-step="${esc(s.id)}" class="${s.id === ui.selected ? "selected" : ""}">
        <td>${esc(s.id)}</td><td>${esc(s.kind)}</td><td>${esc(s.state)}</td>
        <td class="${s.live ? "yes" : "no"}">${s.live ? "yes" : "no"}</td><td>${s.restarts}</td>
        <td>${n(s.waiting)}</td><td>${n(s.processed)}</td><td>${n(s.errors)}</td>
        <td>${s.in_rate}</td><td>${s.out_rate}</td></tr>`).join("");
    highlight();
  }

  function highlight() {
    ui.cy.nodes().removeClass("selected onpath");
    if (ui.selected) ui.cy.$id(ui.selected).addClass("selected");
    if (ui.thread) for (const s of ui.thread.steps) ui.cy.$id(s).addClass("onpath");
  }

  async function selectStep(step) {
    ui.selected = step;
    render();
    $("#detail-title").textContent = `Step ${step}`;
    const r = await fetch(`/api/flows/${encodeURIComponent(ui.current)}/steps/${encodeURIComponent(step)}`);
    const d = await r.json();
    const msgs = d.messages.slice().reverse().map((m) =>
      `<div class="msg"><span class="kind-${esc(m.kind)}">${esc(m.kind)}</span> ` +
      `${esc(new Date(m.at).toLocaleTimeString())} ${esc((m.messageId || "").slice(0, 8))} ` +
      `${esc(JSON.stringify(m.error ? m.error.message : m.body)).slice(0, 300)}</div>`).join("");
    $("#detail").innerHTML =
      `<h4>Recent messages (${d.messages.length})</h4>` + (msgs || '<p class="dim">none recorded yet</p>') +
      `<h4>Log</h4><pre>${esc(d.logs.slice(-40).join("\n"))}</pre>`;
    $("#detail").classList.remove("dim");
    $("#detail").dataset.step = step;
  }

  async function loadThreads() {
    if (!ui.current) return;
    const r = await fetch(`/api/flows/${encodeURIComponent(ui.current)}/threads`);
    const d = await r.json();
    ui.threads = d.threads;
    $("#threads").innerHTML = d.threads.map((t) =>
      `<li data-thread="${esc(t.threadId)}" class="${ui.thread && ui.thread.threadId === t.threadId ? "selected" : ""}">` +
      `${esc(t.threadId.slice(0, 8))} · ${t.records} msg · ${t.steps.length} steps` +
      `${t.errors ? " · " + t.errors + " error(s)" : ""}</li>`).join("") || '<li class="dim">none recorded yet</li>';
  }

  document.addEventListener("click", (e) => {
    const flowButton = e.target.closest("button[data-flow]");
    if (flowButton) { ui.current = flowButton.dataset.flow; ui.shape = ""; ui.selected = null; ui.thread = null; render(); loadThreads(); return; }
    const row = e.target.closest("tr[data-step]");
    if (row) { selectStep(row.dataset.step); return; }
    const li = e.target.closest("li[data-thread]");
    if (li) {
      ui.thread = (ui.threads || []).find((t) => t.threadId === li.dataset.thread) || null;
      loadThreads(); highlight();
    }
  });

  function connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("flows", (e) => {
      const data = JSON.parse(e.data);
      ui.flows = Object.fromEntries(data.flows.map((f) => [f.flow, f]));
      if (!ui.flows[ui.current]) { ui.current = data.flows.length ? data.flows[0].flow : null; ui.shape = ""; }
      ui.updates = (ui.updates || 0) + 1;
      $("#conn").textContent = `live · ${new Date().toLocaleTimeString()}`;
      render();
    });
    source.onerror = () => { $("#conn").textContent = "reconnecting…"; };
  }

  makeGraph();
  connect();
  setInterval(loadThreads, 3000);
})();
