/* vitcube dashboard: fetches the same-origin JSON API and draws with the bundled Plotly.js.
 *
 * No request leaves the origin: every URL below is a path on this server. Strings that come
 * from the API (names, workers, errors) are inserted with textContent, never as HTML.
 */
"use strict";

(function () {
  const { $, el, fill, fmtMacs, fmtTally, fmtBytes, fmtCount, fmtPct, fmtNum, metricOf, errorText, getJSON, markReady } = window.vitcube;
  const FACTORS = ["r", "d_i", "d_m", "w"];
  const FACTOR_TITLE = {
    r: "r · resolution",
    d_i: "d<sub>i</sub> · MV2 depth",
    d_m: "d<sub>m</sub> · transformer depth",
    w: "w · width",
  };
  const FACTOR_PLAIN = { r: "resolution", d_i: "MV2 depth", d_m: "transformer depth", w: "width" };
  const FACTOR_COLOR = { r: "#2f6fdb", d_i: "#1f9d55", d_m: "#c77c02", w: "#8e44ad" };
  const REFERENCE_STYLE = {
    "reference:width_only": { name: "width-only reference", symbol: "diamond", color: "#e67e22" },
    "reference:compound": { name: "compound-scaling reference", symbol: "square", color: "#c0392b" },
    "reference:baseline": { name: "baseline", symbol: "star", color: "#6c3483" },
    // A preset the search names in `references` (EfficientViT, a MobileNet, …): one trace per
    // preset, labelled with its name.
    "reference:named": { name: "named reference", symbol: "triangle-up", color: "#117a65" },
  };
  const GOOD = "#1f9d55";
  const BAD = "#d64545";
  const ACCENT = "#2f6fdb";
  const PAUSED = "#b0519f"; // a trial waiting at a rung (its value is partial)
  const PAUSED_SYMBOLS = ["circle-open", "diamond-open", "square-open", "triangle-up-open"];
  const POLL_MS = 4000;
  const MANY_POINTS = 1500; // past this many markers, smaller ones without outlines
  const MAX_DOTS = 1000; // trials drawn as dots over the 2-D GP views
  const MAX_CLOUD = 2000; // dominated trials drawn on the accuracy-MACs plot
  const PAGE_ROWS = 100; // trials per page of the table
  const CURVES_SHOWN = 40; // learning curves drawn: the best, the references, the running
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif';
  const PLOT_CONFIG = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };

  // --- small helpers ------------------------------------------------------------------------







  /** A download link to a trial's final weights, or null when the server keeps none. */
  function weightsLink(t) {
    if (t.weights_bytes === null || t.weights_bytes === undefined) return null;
    return el("a", {
      class: "weights-link", href: `/api/trials/${t.id}/weights`, download: "",
      title: "the trained network's final EMA weights (torch file with its architecture)",
      text: `weights (${fmtBytes(t.weights_bytes)})`,
    });
  }






  function asList(body) {
    if (Array.isArray(body)) return body;
    if (body && Array.isArray(body.items)) return body.items;
    return [];
  }

  function baseLayout(extra) {
    return {
      uirevision: "keep",
      font: { family: FONT, size: 12, color: "#1d2633" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      margin: { l: 56, r: 16, t: 30, b: 46 },
      hoverlabel: { font: { family: FONT } },
      ...(extra || {}),
    };
  }

  function axis(title, extra) {
    return {
      title: { text: title, standoff: 6 },
      gridcolor: "#e8ecf1",
      zerolinecolor: "#e8ecf1",
      linecolor: "#c9d1db",
      automargin: true,
      ...(extra || {}),
    };
  }

  function showMessage(id, text) {
    const node = $(id);
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function clearPlot(id) {
    const node = $(id);
    if (!node) return;
    if (window.Plotly && node.data) window.Plotly.purge(node);
    node.replaceChildren();
    node.hidden = true;
  }

  function draw(id, traces, layout) {
    const node = $(id);
    node.hidden = false; // before drawing: Plotly sizes the plot to its (visible) container
    return window.Plotly.react(node, traces, layout, PLOT_CONFIG);
  }

  /** At most `limit` trials: the best quarter by the metric, then every k-th of the rest. */
  function sampleTrials(trials, limit) {
    if (trials.length <= limit) return trials;
    const ranked = [...trials].sort(metric().best);
    const best = ranked.slice(0, Math.floor(limit / 4));
    const rest = ranked.slice(best.length);
    const wanted = limit - best.length;
    const step = rest.length / wanted;
    for (let i = 0; i < wanted; i++) best.push(rest[Math.floor(i * step)]);
    return best;
  }

  function factorsOf(trial) {
    return trial.effective_factors || trial.factors || {};
  }

  function kindLabel(kind, reference) {
    if (kind === "reference:named" && reference) return reference;
    if (REFERENCE_STYLE[kind]) return REFERENCE_STYLE[kind].name;
    return kind || "search";
  }

  /** What a reference trial is called: its preset's name, or its rule's. */
  function refName(t) {
    return kindLabel(t.kind, t.reference);
  }

  // --- the list page ------------------------------------------------------------------------

  function initSearchList() {
    const table = $("searches-table");
    if (!table || Number(table.dataset.running || 0) === 0) return;
    // Re-render the server's own table while something runs: one source of truth for markup.
    const timer = setInterval(async () => {
      let response;
      try {
        response = await fetch("/", { credentials: "same-origin" });
      } catch (err) {
        return;
      }
      if (!response.ok || new URL(response.url).pathname === "/login") {
        clearInterval(timer);
        return;
      }
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("searches-card");
      if (fresh) $("searches-card").replaceChildren(...fresh.childNodes);
      const freshTable = $("searches-table");
      if (!freshTable || Number(freshTable.dataset.running || 0) === 0) clearInterval(timer);
    }, POLL_MS + 1000);
  }

  // --- the search page ----------------------------------------------------------------------

  const state = {
    search: null,
    role: null,
    trials: [], // trial objects made from /trials/compact rows, in id order
    byId: new Map(),
    cursor: null, // the compact view's cursor: the next refresh asks what changed since
    front: [], // the server's Pareto front (/pareto), by MACs
    frontIds: new Set(),
    curves: new Map(), // trial id -> its learning curve (for the trials the curves plot shows)
    changed: new Set(), // trials the last refresh brought (their curves may have grown)
    tablePage: 0,
    kindFilter: "",
    brush: null, // {column: [[lo, hi], ...]} from the parallel-coordinates plot
    analysisState: "loading", // loading | drawn | error
    analysis: null,
    curve: null,
    curveError: null,
    formulaC: null,
    formulaAsked: null,
    formula: null,
    lastCompleted: -1,
    sort: { key: "top1", dir: -1 },
    stateFilter: "", // the trials table shows only this state ("": all)
    timer: null,
  };

  /** The search's metric (name, goal) as this page labels, draws and ranks it. */
  function metric() {
    return metricOf(state.search);
  }

  function completedTrials() {
    return state.trials.filter(
      (t) => t.state === "completed" && t.value !== null && t.value !== undefined && t.macs
    );
  }

  /** Multi-fidelity: trials train in rungs and wait (paused) at each until promoted. */
  function isAsha() {
    return Boolean(state.search.schedule && state.search.schedule.kind === "asha");
  }

  /** The rung epochs, last = training.epochs (one rung, the full training, for `full`). */
  function rungEpochs() {
    return (state.search.rungs || []).map((r) => Number(r.epoch));
  }

  /** Trials waiting at a rung with a (partial) result there. */
  function pausedTrials() {
    return state.trials.filter((t) => t.state === "paused" && partialValue(t) !== null && t.macs);
  }

  /** A paused trial's value at the rung it waits at (the API's value is that result too). */
  function partialValue(t) {
    const atRung = t.rung_values && t.to_epoch !== null && t.to_epoch !== undefined
      ? t.rung_values[String(t.to_epoch)] : undefined;
    const value = atRung !== undefined ? atRung : t.value;
    return value === null || value === undefined ? null : Number(value);
  }

  function bestTrial() {
    const done = completedTrials().filter(
      (t) => !state.search.max_macs || t.macs <= state.search.max_macs
    );
    if (done.length === 0) return null;
    const m = metric();
    return done.reduce((a, b) => (m.score(b.value) > m.score(a.value) ? b : a));
  }

  function hoverData(t) {
    const f = factorsOf(t);
    return [
      t.id,
      f.r,
      f.d_i,
      f.d_m,
      f.w,
      t.resolution ?? (t.arch && t.arch.resolution) ?? "?",
      fmtCount(t.params),
      t.worker || "–",
      kindLabel(t.kind, t.reference),
      t.surrogate ? " · surrogate result" : "",
      fmtMacs(t.macs),
    ];
  }

  /** A trial's hover on the front plot; `what` names the value ("top-1", "partial val_map"…). */
  function hover(what) {
    const m = metric();
    return "<b>trial %{customdata[0]}</b> · %{customdata[8]}<br>" +
      `${what} <b>%{y:${m.hover}}${m.unit}</b> at %{customdata[10]}MACs<br>` +
      "r %{customdata[1]:.3f} · d<sub>i</sub> %{customdata[2]:.3f} · " +
      "d<sub>m</sub> %{customdata[3]:.3f} · w %{customdata[4]:.3f}<br>" +
      "resolution %{customdata[5]} px · params %{customdata[6]}<br>" +
      "worker %{customdata[7]}%{customdata[9]}<extra></extra>";
  }

  function renderPareto() {
    const done = completedTrials();
    const paused = pausedTrials();
    const search = state.search;
    const m = metric();
    $("pareto-plot").dataset.points = String(done.length);
    $("pareto-plot").dataset.paused = String(paused.length);
    if (done.length === 0 && paused.length === 0) {
      clearPlot("pareto-plot");
      const failed = (search.counts && search.counts.failed) || 0;
      showMessage(
        "pareto-empty",
        search.state === "running"
          ? "No completed trials yet — the front appears when the first trial finishes" +
              (failed ? ` (${failed} failed so far; see the table below).` : ".")
          : `This search has no completed trials (${search.state}).`
      );
      return;
    }
    showMessage("pareto-empty", done.length ? "" :
      "No trial has trained all its epochs yet: the hollow markers are partial results at a rung, never on the front.");
    // The server's front (GET /pareto): one definition of "non-dominated", ties included.
    const onFront = state.frontIds;
    const front = done.filter((t) => onFront.has(t.id)).sort((a, b) => a.macs - b.macs);
    const traces = front.length === 0 ? [] : [
      {
        name: "Pareto front",
        x: front.map((t) => t.macs / 1e6),
        y: front.map((t) => m.plot(t.value)),
        mode: "lines",
        line: { color: ACCENT, width: 2.5 },
        hoverinfo: "skip",
      },
    ];
    const groups = [
      { name: "trial", test: (t) => !REFERENCE_STYLE[t.kind] && !onFront.has(t.id), cloud: true,
        marker: { color: "rgba(120, 144, 178, 0.75)", size: done.length > MANY_POINTS ? 5 : 8, line: { color: "#fff", width: done.length > MANY_POINTS ? 0 : 1 } } },
      { name: "trial on the front", test: (t) => !REFERENCE_STYLE[t.kind] && onFront.has(t.id),
        marker: { color: ACCENT, size: 12, line: { color: "#fff", width: 1.5 } } },
    ];
    for (const [kind, style] of Object.entries(REFERENCE_STYLE)) {
      const marker = { color: style.color, symbol: style.symbol, size: 15, line: { color: "#1d2633", width: 1 } };
      if (kind !== "reference:named") {
        groups.push({ name: style.name, test: (t) => t.kind === kind, marker });
        continue;
      }
      const names = [...new Set(done.filter((t) => t.kind === kind).map((t) => t.reference))].sort();
      for (const name of names) {
        groups.push({ name: name || style.name, label: true, marker,
          test: (t) => t.kind === kind && t.reference === name });
      }
    }
    let drawn = 0;
    for (const g of groups) {
      const all = done.filter(g.test);
      if (all.length === 0) continue;
      // Past MAX_CLOUD dominated trials, a sample is drawn (each marker is an SVG element, and
      // WebGL is not allowed here); the table and the parallel coordinates hold them all.
      const members = g.cloud ? sampleTrials(all, MAX_CLOUD) : all;
      drawn += members.length;
      traces.push({
        name: members.length < all.length
          ? `${g.name} (${fmtTally(members.length)} of ${fmtTally(all.length)} drawn: the best quarter, every k-th of the rest)`
          : g.name,
        x: members.map((t) => t.macs / 1e6),
        y: members.map((t) => m.plot(t.value)),
        customdata: members.map(hoverData),
        mode: g.label ? "markers+text" : "markers",
        text: g.label ? members.map(() => g.name) : undefined,
        textposition: "top center",
        type: "scatter",
        marker: g.marker,
        hovertemplate: hover(m.label),
      });
    }
    $("pareto-plot").dataset.drawn = String(drawn);
    // Paused trials are partial results (their value at their rung): never on the front, hollow,
    // one symbol per rung.
    const rungs = rungEpochs();
    for (const epoch of [...new Set(paused.map((t) => t.to_epoch))].sort((a, b) => a - b)) {
      const members = paused.filter((t) => t.to_epoch === epoch);
      const symbol = PAUSED_SYMBOLS[Math.max(0, rungs.indexOf(epoch)) % PAUSED_SYMBOLS.length];
      traces.push({
        name: `paused at epoch ${epoch} (partial)`,
        x: members.map((t) => t.macs / 1e6),
        y: members.map((t) => m.plot(partialValue(t))),
        customdata: members.map(hoverData),
        mode: "markers",
        type: "scatter",
        marker: { color: PAUSED, symbol, size: 9, line: { color: PAUSED, width: 1.5 } },
        hovertemplate: hover(`paused at epoch ${epoch}: partial ${m.label}`),
      });
    }
    const shapes = [];
    const annotations = [];
    if (search.max_macs) {
      const x = search.max_macs / 1e6;
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: x, x1: x * 1.08, y0: 0, y1: 1,
        fillcolor: "rgba(214, 69, 69, 0.07)", line: { width: 0 }, layer: "below" });
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: BAD, width: 2, dash: "dash" } });
      annotations.push({ xref: "x", yref: "paper", x, y: 0.02, yanchor: "bottom", xanchor: "right",
        text: `budget ${fmtMacs(search.max_macs)}MACs`, showarrow: false, xshift: -4,
        bgcolor: "rgba(255, 255, 255, 0.85)", font: { color: BAD, size: 12 } });
    }
    if (search.min_macs) {
      const x = search.min_macs / 1e6;
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: { color: "#8a94a3", width: 1.5, dash: "dot" } });
    }
    const surrogate = done.concat(paused).some((t) => t.surrogate);
    draw("pareto-plot", traces, baseLayout({
      xaxis: axis("MACs per image (millions)"),
      yaxis: axis(m.axis, m.yaxis),
      shapes,
      annotations: annotations.concat([{
        xref: "paper", yref: "paper", x: 0.01, y: 0.99, xanchor: "left", yanchor: "top",
        text: `↖ better: ${m.better} for fewer MACs`, showarrow: false,
        font: { color: "#8a94a3", size: 11 } }], surrogate ? [{
        xref: "paper", yref: "paper", x: 0, y: 1, xanchor: "left", yanchor: "bottom",
        text: "surrogate results (not trained)", showarrow: false,
        font: { color: "#6331a3", size: 11 } }] : []),
      legend: { orientation: "h", y: -0.16, yanchor: "top", x: 0 },
      margin: { l: 56, r: 16, t: 28, b: 20 },
    }));
  }

  function factorBars(values, bands, color) {
    const maxShown = 2.5;
    const box = el("div", { class: "factor-bars" });
    for (const f of FACTORS) {
      const v = values[f];
      if (v === undefined || v === null) continue;
      const fill = el("div", {
        class: "factor-fill",
        style: `width:${Math.min(v / maxShown, 1) * 100}%;background:${color || FACTOR_COLOR[f]}`,
      });
      const track = el("div", { class: "factor-track", title: `${f} = ${fmtNum(v, 3)} × baseline` }, [fill]);
      if (bands && bands[f] !== undefined) {
        const lo = Math.max(0, v - 2 * bands[f]);
        const hi = Math.min(maxShown, v + 2 * bands[f]);
        track.appendChild(el("div", {
          class: "factor-band",
          style: `left:${(lo / maxShown) * 100}%;width:${((hi - lo) / maxShown) * 100}%`,
        }));
      }
      track.appendChild(el("div", { class: "factor-one", style: `left:${(1 / maxShown) * 100}%`, title: "baseline (1.0)" }));
      const name = el("div", { class: "factor-name" }, [f, el("small", { text: FACTOR_PLAIN[f] })]);
      box.append(name, track, el("div", { class: "factor-value", text: fmtNum(v, 2) + "×" }));
    }
    return box;
  }

  function budgetMeter(macs, budget) {
    const ratio = budget ? macs / budget : 0;
    return el("div", { class: "budget-meter", title: `${fmtMacs(macs)} of ${fmtMacs(budget)} MACs` }, [
      el("div", {
        class: "budget-meter-fill" + (ratio > 1 ? " over" : ""),
        style: `width:${Math.min(ratio, 1) * 100}%`,
      }),
    ]);
  }

  function renderBest() {
    const box = $("best-summary");
    const best = bestTrial();
    if (!best) {
      box.replaceChildren(el("p", { class: "empty", text: "No completed trial yet." }));
      return;
    }
    const refs = completedTrials().filter((t) => REFERENCE_STYLE[t.kind] && t.id !== best.id);
    const m = metric();
    const compare = el("ul", { class: "compare" });
    for (const ref of refs) {
      const delta = m.delta(best.value, ref.value);
      compare.appendChild(el("li", {}, [
        el("span", { class: delta.good ? "text-good" : "text-bad", text: delta.text }),
        ` vs ${refName(ref)} (${m.fmt(ref.value)})`,
      ]));
    }
    fill(box,
      el("p", { class: "best-line" }, [
        el("strong", { style: "font-size:1.6rem", text: m.fmt(best.value) }),
        ` ${m.label} · `,
        el("a", { href: "#trial-" + best.id, text: `trial ${best.id}` }),
        best.surrogate ? el("span", { class: "tag", style: "margin-left:6px", text: "surrogate" }) : null,
        REFERENCE_STYLE[best.kind] ? el("span", { class: "tag kind-ref", style: "margin-left:6px", text: refName(best) }) : null,
      ]),
      el("div", { class: "small muted", text: `${fmtMacs(best.macs)}MACs of the ${fmtMacs(state.search.max_macs)}MACs budget` }),
      budgetMeter(best.macs, state.search.max_macs),
      factorBars(factorsOf(best)),
      el("div", { class: "small muted", text: `resolution ${best.resolution ?? "?"} px · ${fmtCount(best.params)} params · bars show × baseline (black tick = 1)` }),
      weightsLink(best) ? el("p", { class: "small", id: "best-weights" }, [weightsLink(best)]) : null,
      refs.length ? compare : null
    );
  }

  function renderImportance() {
    const a = state.analysis;
    if (!a || !a.fitted || !a.importance) {
      clearPlot("importance-plot");
      showMessage("importance-empty", a && !a.fitted ? "Shown once the GP is fitted." : "");
      return;
    }
    showMessage("importance-empty", "");
    const entries = FACTORS.filter((f) => a.importance[f] !== undefined)
      .map((f) => [f, Number(a.importance[f])])
      .sort((p, q) => p[1] - q[1]);
    const total = entries.reduce((s, e) => s + e[1], 0) || 1;
    draw("importance-plot", [{
      type: "bar",
      orientation: "h",
      y: entries.map((e) => `${e[0]} (${FACTOR_PLAIN[e[0]]})`),
      x: entries.map((e) => (100 * e[1]) / total),
      marker: { color: entries.map((e) => FACTOR_COLOR[e[0]]) },
      text: entries.map((e) => ((100 * e[1]) / total).toFixed(0) + " %"),
      textposition: "auto",
      hovertemplate: "%{y}: %{x:.1f} % of the importance<extra></extra>",
    }], baseLayout({
      xaxis: axis("share of importance (%)", { rangemode: "tozero" }),
      yaxis: axis("", { automargin: true }),
      margin: { l: 10, r: 10, t: 8, b: 40 },
      showlegend: false,
    }));
  }

  function analysisMessage() {
    const a = state.analysis;
    if (!a) return "The GP views could not be loaded.";
    if (a.error) return a.error;
    if (!a.fitted) {
      const n = a.n !== undefined ? ` (${a.n} completed so far)` : "";
      return `The GP is not fitted yet${n}: ${a.reason || "it needs more completed trials"}.`;
    }
    return "";
  }

  function render1d() {
    const a = state.analysis;
    const message = analysisMessage();
    if (message || !a.one_d) {
      for (const f of FACTORS) clearPlot("gp1d-" + f);
      showMessage("gp-empty", message || "The analysis has no 1-D views.");
      return;
    }
    showMessage("gp-empty", "");
    const m = metric();
    const ref = a.reference_value ?? a.reference_top1;
    const valueOf = (o) => o.value ?? o.top1;
    // One shared y range so the four plots compare how much each factor moves the metric.
    let lo = Infinity;
    let hi = -Infinity;
    for (const f of FACTORS) {
      const v = a.one_d[f];
      if (!v) continue;
      for (const y of v.lower.concat(v.upper, (v.observations || []).map(valueOf))) {
        lo = Math.min(lo, y);
        hi = Math.max(hi, y);
      }
    }
    if (ref !== null && ref !== undefined) {
      lo = Math.min(lo, ref);
      hi = Math.max(hi, ref);
    }
    const pad = Math.max((hi - lo) * 0.06, 0.002);
    const yRange = [m.plot(lo - pad), m.plot(hi + pad)];
    if (m.minimize) yRange.reverse(); // up is better
    for (const [i, f] of FACTORS.entries()) {
      const v = a.one_d[f];
      if (!v) {
        clearPlot("gp1d-" + f);
        continue;
      }
      const color = FACTOR_COLOR[f];
      const obs = v.observations || [];
      const better = obs.filter((o) => o.better);
      const worse = obs.filter((o) => !o.better);
      const traces = [
        { x: v.x, y: v.upper.map(m.plot), mode: "lines", line: { width: 0 },
          hoverinfo: "skip", showlegend: false },
        { x: v.x, y: v.lower.map(m.plot), mode: "lines", line: { width: 0 },
          fill: "tonexty", fillcolor: hexA(color, 0.18), hoverinfo: "skip", name: "95 % band",
          showlegend: false },
        { x: v.x, y: v.mean.map(m.plot), mode: "lines", line: { color, width: 2.5 },
          name: "GP mean", showlegend: false,
          hovertemplate: `${f} %{x:.2f}: %{y:${m.hover}}${m.unit}<extra>GP mean</extra>` },
        { x: better.map((o) => o.x), y: better.map((o) => m.plot(valueOf(o))), mode: "markers",
          marker: { color: GOOD, size: 7, line: { color: "#fff", width: 1 } }, name: "better than reference",
          showlegend: false, hovertemplate: `${f} %{x:.3f}: %{y:${m.hover}}${m.unit}<extra>better</extra>` },
        { x: worse.map((o) => o.x), y: worse.map((o) => m.plot(valueOf(o))), mode: "markers",
          marker: { color: BAD, size: 7, line: { color: "#fff", width: 1 } }, name: "worse than reference",
          showlegend: false, hovertemplate: `${f} %{x:.3f}: %{y:${m.hover}}${m.unit}<extra>not better</extra>` },
      ];
      const shapes = [];
      if (ref !== null && ref !== undefined) {
        shapes.push({ type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: m.plot(ref), y1: m.plot(ref),
          line: { color: "#555", width: 1.2, dash: "dot" } });
      }
      const share = a.importance && a.importance[f] !== undefined
        ? ` <span style="font-size:11px;color:#5f6b7a">(importance ${(100 * a.importance[f] / FACTORS.reduce((s, g) => s + (a.importance[g] || 0), 0)).toFixed(0)} %)</span>`
        : "";
      draw("gp1d-" + f, traces, baseLayout({
        title: { text: FACTOR_TITLE[f] + share, font: { size: 13, color }, x: 0.02, xanchor: "left" },
        xaxis: axis(f + " (× baseline)"),
        yaxis: axis(i === 0 ? m.label + (m.unit ? " (%)" : "") : "", { range: yRange }),
        shapes,
        margin: { l: i === 0 ? 50 : 36, r: 8, t: 30, b: 40 },
        showlegend: false,
      }));
    }
  }

  function hexA(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  /** search.analyze's grids are indexed [i over x][j over y]; Plotly wants z[row = y][col = x]. */
  function gridToZ(grid, xs, ys) {
    if (grid.length === xs.length && xs.length !== ys.length) {
      return ys.map((_, j) => xs.map((__, i) => grid[i][j]));
    }
    if (grid.length === ys.length && xs.length !== ys.length) return grid;
    return Z_ROWS_ARE_X ? ys.map((_, j) => xs.map((__, i) => grid[i][j])) : grid;
  }
  const Z_ROWS_ARE_X = true;

  function render2d() {
    const a = state.analysis;
    const message = analysisMessage();
    const ids = [];
    for (const pair of ["r-w", "r-d_m"]) for (const stat of ["mean", "std"]) ids.push([pair, stat]);
    if (message || !a.two_d) {
      for (const [pair, stat] of ids) clearPlot(`gp2d-${pair}-${stat}`);
      showMessage("gp2d-empty", message || "The analysis has no 2-D views.");
      return;
    }
    showMessage("gp2d-empty", "");
    // At most MAX_DOTS dots: each is an SVG element, and four plots draw them.
    const dots = sampleTrials(completedTrials(), MAX_DOTS);
    const best = bestTrial();
    const m = metric();
    for (const [pair, stat] of ids) {
      const id = `gp2d-${pair}-${stat}`;
      const g = a.two_d[pair];
      if (!g || !g[stat]) {
        clearPlot(id);
        continue;
      }
      const [fx, fy] = pair.split("-");
      const z = gridToZ(g[stat], g.x, g.y).map((row) => row.map(m.plot));
      const traces = [
        {
          type: "contour",
          x: g.x,
          y: g.y,
          z,
          colorscale: stat === "mean" ? "Viridis" : "Blues",
          reversescale: stat === "mean" && m.minimize, // bright is better
          ncontours: 14,
          contours: { coloring: "heatmap", showlines: true },
          line: { width: 0.5, color: "rgba(255,255,255,0.35)" },
          colorbar: { thickness: 10, len: 0.9, title: { text: (stat === "mean" ? m.label : "std") + m.unit, side: "right" }, outlinewidth: 0 },
          hovertemplate: `${fx} %{x:.2f}, ${fy} %{y:.2f}: %{z:${m.hover}}${m.unit}<extra>${stat}</extra>`,
        },
        {
          type: "scatter",
          mode: "markers",
          x: dots.map((t) => factorsOf(t)[fx]),
          y: dots.map((t) => factorsOf(t)[fy]),
          marker: { color: "rgba(255,255,255,0.9)", size: 6, line: { color: "#1d2633", width: 1 } },
          hovertemplate: `trial %{text}<extra></extra>`,
          text: dots.map((t) => String(t.id)),
          showlegend: false,
        },
      ];
      if (best) {
        traces.push({
          type: "scatter", mode: "markers", x: [factorsOf(best)[fx]], y: [factorsOf(best)[fy]],
          marker: { symbol: "star", color: "#ffcc00", size: 15, line: { color: "#1d2633", width: 1 } },
          hovertemplate: `best: trial ${best.id}<extra></extra>`, showlegend: false,
        });
      }
      const sub = (name) => name.replace("_", "<sub>") + (name.includes("_") ? "</sub>" : "");
      draw(id, traces, baseLayout({
        title: { text: `${sub(fx)}–${sub(fy)}: ${stat === "mean" ? "posterior mean" : "uncertainty (std)"}`, font: { size: 13 }, x: 0.02, xanchor: "left" },
        xaxis: axis(fx, { range: [Math.min(...g.x), Math.max(...g.x)] }),
        yaxis: axis(fy, { range: [Math.min(...g.y), Math.max(...g.y)] }),
        margin: { l: 44, r: 8, t: 30, b: 40 },
        showlegend: false,
      }));
    }
  }

  function renderFormulaPlot() {
    const curve = state.curve;
    if (!curve || !curve.factors) {
      clearPlot("formula-plot");
      showMessage("formula-empty", state.curveError || "The formula is not available yet.");
      return;
    }
    showMessage("formula-empty", "");
    const traces = [];
    const annotations = [];
    const shapes = [];
    const layout = baseLayout({
      grid: { rows: 1, columns: 4, pattern: "independent", xgap: 0.22 },
      showlegend: false,
      margin: { l: 44, r: 10, t: 36, b: 44 },
    });
    for (const [i, f] of FACTORS.entries()) {
      const v = curve.factors[f];
      if (!v) continue;
      const suffix = i === 0 ? "" : String(i + 1);
      const xa = "x" + suffix;
      const ya = "y" + suffix;
      const color = FACTOR_COLOR[f];
      traces.push(
        { x: curve.c, y: v.upper, xaxis: xa, yaxis: ya, mode: "lines", line: { width: 0 }, hoverinfo: "skip" },
        { x: curve.c, y: v.lower, xaxis: xa, yaxis: ya, mode: "lines", line: { width: 0 }, fill: "tonexty",
          fillcolor: hexA(color, 0.18), hoverinfo: "skip" },
        { x: curve.c, y: v.mean, xaxis: xa, yaxis: ya, mode: "lines", line: { color, width: 2.5 },
          hovertemplate: `c %{x:.2f}: ${f} = %{y:.3f}<extra></extra>` }
      );
      const pts = (curve.points || []).filter((p) => p[f] !== undefined);
      if (pts.length) {
        traces.push({ x: pts.map((p) => p.c), y: pts.map((p) => p[f]), xaxis: xa, yaxis: ya, mode: "markers",
          marker: { color: "#fff", size: 6, line: { color, width: 1.5 } },
          hovertemplate: `Pareto trial: c %{x:.2f}, ${f} %{y:.3f}<extra></extra>` });
      }
      layout["xaxis" + suffix] = axis("c = MACs / m<sub>0</sub>");
      layout["yaxis" + suffix] = axis(i === 0 ? "factor (× baseline)" : "");
      annotations.push({ text: `<b>${FACTOR_TITLE[f]}</b>`, font: { color, size: 13 }, showarrow: false,
        xref: xa + " domain", yref: ya + " domain", x: 0, y: 1.02, xanchor: "left", yanchor: "bottom" });
      const marks = [];
      if (state.search.c) marks.push([state.search.c, "#8a94a3", "dot"]);
      if (state.formulaC) marks.push([state.formulaC, "#1d2633", "dash"]);
      for (const [c, lineColor, dash] of marks) {
        shapes.push({ type: "line", xref: xa, yref: ya + " domain", x0: c, x1: c, y0: 0, y1: 1,
          line: { color: lineColor, width: 1.5, dash } });
      }
      if (state.formula && state.formula.factors && state.formula.factors[f]) {
        traces.push({ x: [state.formula.c], y: [state.formula.factors[f].mean], xaxis: xa, yaxis: ya,
          mode: "markers", marker: { color, size: 12, symbol: "diamond", line: { color: "#1d2633", width: 1.5 } },
          hovertemplate: `recommended for c %{x:.2f}: ${f} %{y:.3f}<extra></extra>` });
      }
    }
    layout.annotations = annotations;
    layout.shapes = shapes;
    draw("formula-plot", traces, layout);
  }

  async function runFormula(c) {
    const box = $("formula-result");
    state.formulaAsked = c;
    if (!box.firstChild) box.replaceChildren(el("p", { class: "muted", text: "Asking the formula…" }));
    const reply = await getJSON(
      `/api/searches/${encodeURIComponent(state.search.id)}/formula?c=${encodeURIComponent(c)}`
    );
    if (!reply.ok) {
      state.formula = null;
      state.formulaC = null;
      box.replaceChildren(el("p", { class: "empty", id: "formula-error", text: "No recommendation yet: " + errorText(reply) }));
      renderFormulaPlot();
      return;
    }
    const r = reply.body;
    state.formula = r;
    state.formulaC = Number(r.c);
    const means = {};
    const stds = {};
    for (const f of FACTORS) {
      if (r.factors && r.factors[f]) {
        means[f] = Number(r.factors[f].mean);
        stds[f] = Number(r.factors[f].std);
      }
    }
    const built = r.scale || means;
    const arch = r.arch || {};
    const resolution = arch.resolution ?? "?";
    const over = r.max_macs && r.macs > r.max_macs;
    box.replaceChildren(
      el("div", { id: "formula-recommendation" }, [
        el("p", {}, [
          "For ",
          el("strong", { text: `c = ${fmtNum(r.c, 2)}` }),
          ` (≤ ${fmtMacs(r.max_macs)}MACs) build:`,
        ]),
        factorBars(built, stds),
        el("dl", { class: "kv" }, [
          el("dt", { text: "MACs" }),
          el("dd", { id: "formula-macs" }, [
            el("strong", { text: `${fmtMacs(r.macs)}` }),
            ` of ${fmtMacs(r.max_macs)} allowed`,
            over ? el("span", { class: "text-bad", text: " (over)" }) : null,
          ]),
          el("dt", { text: "params" }),
          el("dd", { text: fmtCount(r.params) }),
          el("dt", { text: "resolution" }),
          el("dd", { text: `${resolution} px` }),
          el("dt", { text: "formula" }),
          el("dd", { class: "small", text: FACTORS.filter((f) => means[f] !== undefined)
            .map((f) => `${f} ${fmtNum(means[f], 2)} ± ${fmtNum(stds[f], 2)}`).join(" · ") }),
        ]),
        budgetMeter(r.macs, r.max_macs),
        el("p", { class: "small muted", text: "Bars: the factors that were built (× baseline, black tick = 1); grey: ±2 std of the formula." }),
      ])
    );
    renderFormulaPlot();
  }

  // --- trials table -------------------------------------------------------------------------

  const COLUMNS = [
    { key: "id", label: "#", num: true, value: (t) => t.id },
    { key: "kind", label: "kind", value: (t) => t.kind || "search",
      cell: (t) => REFERENCE_STYLE[t.kind] ? el("span", { class: "tag kind-ref", text: refName(t) }) : document.createTextNode(kindLabel(t.kind)) },
    { key: "state", label: "state", value: (t) => t.state,
      cell: (t) => el("span", {
        class: `badge state-${t.state}`, text: t.state,
        title: t.state === "paused" ? `waiting at the rung at epoch ${t.to_epoch} for a promotion` : null,
      }) },
    // Multi-fidelity searches only: how far each trial has trained, and where its segment ends.
    { key: "epochs_trained", label: "epochs", num: true, asha: true, value: (t) => t.epochs_trained,
      cell: (t) => {
        const trained = fmtTally(t.epochs_trained || 0);
        const going = (t.state === "queued" || t.state === "running") && t.to_epoch > (t.epochs_trained || 0);
        return el("span", {
          title: going ? `trained ${trained} epochs; this segment trains to epoch ${t.to_epoch}` : `trained ${trained} epochs`,
          text: going ? `${trained} → ${t.to_epoch}` : trained,
        });
      } },
    ...FACTORS.map((f) => ({ key: f, label: f, num: true, value: (t) => factorsOf(t)[f], show: (v) => fmtNum(v, 3) })),
    { key: "resolution", label: "px", num: true, value: (t) => t.resolution ?? (t.arch && t.arch.resolution) },
    { key: "macs", label: "MACs", num: true, value: (t) => t.macs, show: fmtMacs },
    { key: "params", label: "params", num: true, value: (t) => t.params, show: fmtCount },
    // The search's metric: labelled by its name, sorted by its score (best first by default).
    { key: "top1", get label() { return metric().label; }, num: true, value: (t) => metric().score(t.value),
      cell: (t) => (t.state === "paused" && t.value !== null && t.value !== undefined
        ? el("span", { class: "partial", title: `partial: ${metric().label} at epoch ${t.to_epoch}, the rung it waits at` },
          [metric().fmt(t.value, 2), el("small", { text: ` @ ${t.to_epoch}` })])
        : document.createTextNode(metric().fmt(t.value, 2))) },
    { key: "top5", label: "top-5", num: true, value: (t) => t.top5, show: (v) => fmtPct(v, 2) },
    { key: "latency_ms", label: "latency ms", num: true, value: (t) => t.latency_ms, show: (v) => fmtNum(v, 2) },
    { key: "worker", label: "worker", value: (t) => t.worker },
    { key: "attempts", label: "tries", num: true, value: (t) => t.attempts },
    { key: "source", label: "source", value: (t) => (t.state === "completed" ? (t.surrogate ? "surrogate" : "trained") : null) },
    // Download links on the trials of the front (retention keeps their weights).
    { key: "weights_bytes", label: "weights", num: true, value: (t) => t.weights_bytes,
      cell: (t, ctx) => (ctx.front.has(t.id) && weightsLink(t)) || document.createTextNode(t.weights_bytes ? fmtBytes(t.weights_bytes) : "–") },
    { key: "error", label: "error", value: (t) => t.error,
      cell: (t) => (t.error ? el("div", { class: "error-text", text: t.error }) : document.createTextNode("")) },
  ];

  function compareValues(a, b) {
    const aNull = a === null || a === undefined || a === "";
    const bNull = b === null || b === undefined || b === "";
    if (aNull || bNull) return aNull === bNull ? 0 : aNull ? 1 : -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function shownColumns() {
    return COLUMNS.filter((c) => !c.asha || isAsha());
  }

  /** The trials the table lists: state and kind filters, and the parallel-coordinates brush. */
  function tableTrials() {
    const brushed = brushFilter();
    return state.trials.filter((t) =>
      (!state.stateFilter || t.state === state.stateFilter) &&
      (!state.kindFilter || kindGroup(t.kind) === state.kindFilter) &&
      (!brushed || brushed(t)));
  }

  function kindGroup(kind) {
    return REFERENCE_STYLE[kind] ? "reference" : "search";
  }

  // Sorting 10,000 rows is kept until the data, the order or a filter changes: a page turn
  // only draws the next PAGE_ROWS rows.
  let sorted = { key: null, rows: [] };

  function sortedTrials(columns) {
    const key = JSON.stringify([state.sort, state.stateFilter, state.kindFilter, state.brush, state.version]);
    if (sorted.key === key) return sorted.rows;
    const col = columns.find((c) => c.key === state.sort.key) || columns[0];
    const rows = tableTrials().sort((a, b) => {
      const av = col.value(a);
      const bv = col.value(b);
      const nullish = (v) => v === null || v === undefined || v === "";
      if (nullish(av) || nullish(bv)) return compareValues(av, bv); // empty cells last either way
      return state.sort.dir * compareValues(av, bv) || compareValues(a.id, b.id);
    });
    sorted = { key, rows };
    return rows;
  }

  function renderTrials() {
    const table = $("trials-table");
    const headRow = table.tHead.rows[0];
    const columns = shownColumns();
    if (headRow.cells.length === 0) {
      for (const col of columns) {
        const th = el("th", { class: col.num ? "num" : "", "data-key": col.key, scope: "col", text: col.label });
        th.addEventListener("click", () => {
          state.sort = { key: col.key, dir: state.sort.key === col.key ? -state.sort.dir : col.num ? -1 : 1 };
          state.tablePage = 0;
          renderTrials();
        });
        headRow.appendChild(th);
      }
    }
    for (const th of headRow.cells) {
      if (th.dataset.key === state.sort.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const rows = sortedTrials(columns);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    state.tablePage = Math.min(Math.max(0, state.tablePage), pages - 1);
    const first = state.tablePage * PAGE_ROWS;
    const front = state.frontIds;
    const body = el("tbody");
    for (const t of rows.slice(first, first + PAGE_ROWS)) {
      const tr = el("tr", {
        id: "trial-" + t.id,
        class: [t.state === "failed" ? "row-failed" : "", front.has(t.id) ? "row-front" : ""].join(" ").trim(),
        title: front.has(t.id) ? "on the Pareto front" : null,
      });
      for (const c of columns) {
        const v = c.value(t);
        const td = el("td", { class: c.num ? "num" : "" });
        if (c.cell) td.appendChild(c.cell(t, { front }));
        else td.textContent = v === null || v === undefined ? "–" : c.show ? c.show(v) : String(v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    table.replaceChild(body, table.tBodies[0]);
    renderPager(rows.length, first, pages);
    const counts = state.trials.reduce((acc, t) => ((acc[t.state] = (acc[t.state] || 0) + 1), acc), {});
    $("trials-count").textContent = `— ${state.trials.length} in all` +
      Object.entries(counts).map(([s, n]) => ` · ${n} ${s}`).join("");
    renderStateFilter(counts);
    renderKindFilter();
    showMessage("trials-empty", state.trials.length ? (rows.length ? "" : "No trial matches the filters.") :
      "No trials yet: the planner queues the reference trials first, then the strategy's suggestions.");
    table.parentElement.hidden = rows.length === 0;
  }

  /** "rows 101–200 of 9,812" and the page buttons (hidden when one page holds every row). */
  function renderPager(total, first, pages) {
    const pager = $("trials-pager");
    if (!pager) return;
    pager.hidden = pages <= 1;
    if (!pager.dataset.bound) {
      pager.dataset.bound = "1";
      const turn = (delta) => () => {
        state.tablePage += delta;
        renderTrials();
      };
      $("trials-prev").addEventListener("click", turn(-1));
      $("trials-next").addEventListener("click", turn(1));
      $("trials-first").addEventListener("click", () => { state.tablePage = 0; renderTrials(); });
      $("trials-last").addEventListener("click", () => { state.tablePage = 1e9; renderTrials(); });
    }
    $("trials-range").textContent = total
      ? `rows ${fmtTally(first + 1)}–${fmtTally(Math.min(total, first + PAGE_ROWS))} of ${fmtTally(total)} · page ${state.tablePage + 1} of ${fmtTally(pages)}`
      : "";
    $("trials-prev").disabled = $("trials-first").disabled = state.tablePage === 0;
    $("trials-next").disabled = $("trials-last").disabled = state.tablePage >= pages - 1;
  }

  /** Show one trial's row: turn to its page (a link to #trial-N from the best-so-far card). */
  function showTrial(id) {
    state.stateFilter = "";
    state.kindFilter = "";
    const rows = sortedTrials(shownColumns());
    let index = rows.findIndex((t) => t.id === id);
    if (index < 0) {
      state.brush = null;
      clearBrush();
      index = sortedTrials(shownColumns()).findIndex((t) => t.id === id);
    }
    if (index < 0) return;
    state.tablePage = Math.floor(index / PAGE_ROWS);
    renderTrials();
    const row = $("trial-" + id);
    if (row) row.scrollIntoView({ block: "center" });
  }

  function renderKindFilter() {
    const select = $("trials-kind");
    if (!select || select.dataset.bound) return;
    select.dataset.bound = "1";
    select.addEventListener("change", () => {
      state.kindFilter = select.value;
      state.tablePage = 0;
      renderTrials();
    });
  }

  /** The state filter's options: the states present, with their counts (the choice is kept). */
  function renderStateFilter(counts) {
    const select = $("trials-filter");
    if (!select) return;
    if (!select.dataset.bound) {
      select.dataset.bound = "1";
      select.addEventListener("change", () => {
        state.stateFilter = select.value;
        state.tablePage = 0;
        renderTrials();
      });
    }
    const signature = JSON.stringify([state.stateFilter, counts]);
    if (select.dataset.signature === signature) return; // an open list is not rebuilt under the mouse
    select.dataset.signature = signature;
    const shown = Object.keys(counts);
    if (state.stateFilter && !shown.includes(state.stateFilter)) shown.push(state.stateFilter);
    fill(select,
      el("option", { value: "", text: `all states (${state.trials.length})` }),
      ...shown.map((s) => el("option", { value: s, text: `${s} (${counts[s] || 0})` })));
    select.value = state.stateFilter;
  }

  /** The trials whose learning curves are drawn: the best completed ones, the references,
   * and those training or waiting at a rung now (CURVES_SHOWN at most). */
  function curveTrials() {
    const refs = state.trials.filter((t) => REFERENCE_STYLE[t.kind]);
    const live = state.trials.filter((t) => t.state === "running" || t.state === "paused")
      .sort(metric().best);
    const best = completedTrials().filter((t) => !REFERENCE_STYLE[t.kind])
      .sort(metric().best);
    const chosen = new Map();
    for (const t of refs.concat(live, best)) {
      if (chosen.size >= CURVES_SHOWN) break;
      chosen.set(t.id, t);
    }
    return [...chosen.values()];
  }

  /** Fetch the curves the plot needs that are missing or may have grown, then draw them. */
  async function loadCurves() {
    const wanted = curveTrials().filter((t) => t.state !== "queued" &&
      (!state.curves.has(t.id) || state.changed.has(t.id)));
    if (wanted.length) {
      const ids = wanted.map((t) => t.id).join(",");
      const reply = await getJSON(`/api/searches/${encodeURIComponent(state.search.id)}/curves?ids=${ids}`);
      if (reply.ok) for (const [id, curve] of Object.entries(reply.body)) state.curves.set(Number(id), curve);
    }
    renderCurves();
  }

  function renderCurves() {
    const withCurves = curveTrials().map((t) => ({ ...t, curve: state.curves.get(t.id) || [] }))
      .filter((t) => t.curve.length > 0);
    if (withCurves.length === 0) {
      clearPlot("curves-plot");
      showMessage("curves-empty", "No learning curves yet: they appear as trials report epochs.");
      return;
    }
    showMessage("curves-empty", "");
    const best = bestTrial();
    const m = metric();
    const has = (p) => p[m.name] !== null && p[m.name] !== undefined;
    const traces = withCurves
      .sort((a, b) => m.best(b, a)) // worst first: the best drawn last, on top
      .map((t) => {
        const ref = REFERENCE_STYLE[t.kind];
        const isBest = best && t.id === best.id;
        // A paused trial's curve ends at its rung, where its training stopped.
        const pts = t.curve.filter((p) => has(p) && !(t.state === "paused" && p.epoch > t.to_epoch));
        return {
          name: isBest ? `best (trial ${t.id})` : ref ? refName(t) : `trial ${t.id}`,
          x: pts.map((p) => p.epoch),
          y: pts.map((p) => m.plot(p[m.name])),
          mode: pts.length === 1 ? "markers" : "lines",
          showlegend: Boolean(ref || isBest),
          line: {
            color: isBest ? ACCENT : ref ? ref.color : "rgba(120, 144, 178, 0.55)",
            width: isBest ? 3 : ref ? 2 : 1.2,
            dash: ref && !isBest ? "dash" : t.state === "running" ? "dot" : "solid",
          },
          hovertemplate: `trial ${t.id} (${t.state}) · epoch %{x}: %{y:${m.hover}}${m.unit}<extra></extra>`,
        };
      });
    const shapes = [];
    const annotations = [];
    if (isAsha()) {
      // Where each paused trial's training stopped: a hollow marker at its curve's end.
      const ends = withCurves.filter((t) => t.state === "paused").map((t) => {
        const pts = t.curve.filter((p) => has(p) && p.epoch <= t.to_epoch);
        return [t, pts[pts.length - 1]];
      }).filter(([, end]) => end);
      if (ends.length) {
        traces.push({
          name: "paused at a rung",
          x: ends.map(([, end]) => end.epoch),
          y: ends.map(([, end]) => m.plot(end[m.name])),
          text: ends.map(([t]) => String(t.id)),
          mode: "markers",
          marker: { color: PAUSED, symbol: "circle-open", size: 8, line: { color: PAUSED, width: 1.5 } },
          hovertemplate: `trial %{text} paused at epoch %{x}: %{y:${m.hover}}${m.unit} (partial)<extra></extra>`,
        });
      }
      // The rungs: vertical lines where segments end and trials wait for a promotion.
      for (const [k, epoch] of rungEpochs().entries()) {
        shapes.push({ type: "line", xref: "x", yref: "paper", x0: epoch, x1: epoch, y0: 0, y1: 1,
          line: { color: hexA(PAUSED, 0.55), width: 1.5, dash: "dot" }, layer: "below" });
        annotations.push({ xref: "x", yref: "paper", x: epoch, y: 1, yanchor: "bottom", showarrow: false,
          text: `rung ${k + 1}`, font: { color: PAUSED, size: 11 } });
      }
    }
    draw("curves-plot", traces, baseLayout({
      xaxis: axis("epoch"),
      yaxis: axis(m.curveAxis, m.yaxis),
      shapes,
      annotations,
      legend: { orientation: "h", y: isAsha() ? 1.1 : 1.02, yanchor: "bottom", x: 0 },
      margin: { l: 56, r: 16, t: isAsha() ? 48 : 30, b: 44 },
    }));
  }

  // --- parallel coordinates -----------------------------------------------------------------
  //
  // Drawn on a 2-D canvas by this file, not with Plotly's parcoords: that trace needs WebGL
  // compiled through `new Function`, which this page's Content-Security-Policy (script-src
  // 'self', no 'unsafe-eval') forbids. A canvas draws 10,000 polylines in a few milliseconds.

  // The axes, left to right: the four factors (effective), then what they cost and gave.
  const PARCOORDS = [
    ...FACTORS.map((f) => ({ key: f, label: f, value: (t) => factorsOf(t)[f], digits: 2 })),
    { key: "macs", label: "MMACs", value: (t) => t.macs / 1e6, digits: 0 },
    { key: "top1", get label() { return metric().label + metric().unit; }, value: (t) => metric().plot(t.value), digits: 1 },
  ];
  const PC_MARGIN = { l: 36, r: 84, t: 34, b: 26 };
  const PC_HEIGHT = 380;
  // Viridis at five stops, for the metric's colour of each line (bright: better).
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const pc = { geometry: null, drag: null, frame: 0 };

  function viridis(u) {
    const x = Math.min(1, Math.max(0, u)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const f = x - i;
    const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }

  /** A test for the brushed ranges (a trial outside any brushed axis fails), or null. */
  function brushFilter() {
    const brush = state.brush;
    if (!brush || Object.keys(brush).length === 0) return null;
    const axes = PARCOORDS.filter((d) => brush[d.key]);
    return (t) => {
      if (t.state !== "completed" || t.value === null || t.value === undefined) return false;
      return axes.every((d) => {
        const v = d.value(t);
        return brush[d.key].some(([lo, hi]) => v >= lo && v <= hi);
      });
    };
  }

  function clearBrush() {
    state.brush = null;
    drawParcoords();
    renderBrushNote();
  }

  function renderBrushNote() {
    const note = $("parcoords-note");
    if (!note) return;
    $("parcoords-plot").dataset.brush = JSON.stringify(state.brush || {});
    const brushed = brushFilter();
    if (!brushed) {
      note.replaceChildren(document.createTextNode("Drag along an axis to keep a range (drag again to change it, click the axis to drop it); the trials table then lists only the trials inside every range."));
      note.dataset.brushed = "0";
      return;
    }
    const done = completedTrials();
    const inside = done.filter(brushed).length;
    const ranges = PARCOORDS.filter((d) => state.brush[d.key])
      .map((d) => `${d.label} ${state.brush[d.key].map(([lo, hi]) => `${fmtNum(lo, d.digits + 1)}–${fmtNum(hi, d.digits + 1)}`).join(" or ")}`);
    const clear = el("button", { type: "button", class: "button small", id: "parcoords-clear", text: "Clear" });
    clear.addEventListener("click", () => {
      clearBrush();
      state.tablePage = 0;
      renderTrials();
    });
    note.dataset.brushed = String(inside);
    note.replaceChildren(
      el("strong", { id: "parcoords-count", text: `${fmtTally(inside)} of ${fmtTally(done.length)}` }),
      ` completed trials within ${ranges.join(", ")} — the table lists them. `,
      clear);
  }

  function renderParcoords() {
    const node = $("parcoords-plot");
    if (!node) return;
    const done = completedTrials();
    if (done.length < 2) {
      node.hidden = true;
      showMessage("parcoords-empty", "Drawn once two trials have completed.");
      renderBrushNote();
      return;
    }
    node.hidden = false;
    showMessage("parcoords-empty", "");
    // Lines drawn worst first, so the best lie on top.
    const trials = [...done].sort((a, b) => metric().best(b, a));
    const columns = PARCOORDS.map((d) => trials.map(d.value));
    const ranges = columns.map((values, k) => {
      let lo = Math.min(...values);
      let hi = Math.max(...values);
      if (PARCOORDS[k].key === "macs" && state.search.max_macs) hi = Math.max(hi, state.search.max_macs / 1e6);
      if (hi - lo < 1e-9) {
        lo -= 0.5;
        hi += 0.5;
      }
      return [lo, hi];
    });
    pc.data = { trials, columns, ranges };
    bindParcoords(node);
    drawParcoords();
    renderBrushNote();
  }

  function drawParcoords() {
    const node = $("parcoords-plot");
    const canvas = $("parcoords-canvas");
    if (!node || !canvas || !pc.data || node.hidden) return;
    const width = Math.max(320, node.clientWidth);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(PC_HEIGHT * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${PC_HEIGHT}px`;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, PC_HEIGHT);
    const top = PC_MARGIN.t;
    const bottom = PC_HEIGHT - PC_MARGIN.b;
    const span = (width - PC_MARGIN.l - PC_MARGIN.r) / (PARCOORDS.length - 1);
    const xs = PARCOORDS.map((_, k) => PC_MARGIN.l + k * span);
    const { trials, columns, ranges } = pc.data;
    const y = (k, v) => bottom - ((v - ranges[k][0]) / (ranges[k][1] - ranges[k][0])) * (bottom - top);
    pc.geometry = { xs, top, bottom, ranges };
    node.dataset.axes = JSON.stringify(PARCOORDS.map((d) => d.label));
    node.dataset.axisX = JSON.stringify(xs.map((x) => Math.round(x)));
    node.dataset.axisTop = String(top);
    node.dataset.axisBottom = String(bottom);
    node.dataset.lines = String(trials.length);
    const inside = brushFilter();
    const m = metric();
    const top1 = ranges[PARCOORDS.length - 1];
    // Bright is better: a minimised metric's colour runs the other way.
    const shade = (v) => viridis(m.minimize ? (top1[1] - v) / (top1[1] - top1[0]) : (v - top1[0]) / (top1[1] - top1[0]));
    const alpha = trials.length > 2000 ? 0.22 : trials.length > 300 ? 0.45 : 0.85;
    const line = (i) => {
      g.beginPath();
      for (let k = 0; k < xs.length; k++) {
        const py = y(k, columns[k][i]);
        if (k === 0) g.moveTo(xs[k], py);
        else g.lineTo(xs[k], py);
      }
      g.stroke();
    };
    g.lineWidth = 1;
    if (inside) {
      // Outside the brush: faint grey; inside: coloured by top-1 on top of them.
      g.globalAlpha = Math.min(0.25, alpha);
      g.strokeStyle = "#b7c0cc";
      trials.forEach((t, i) => { if (!inside(t)) line(i); });
    }
    g.globalAlpha = alpha;
    trials.forEach((t, i) => {
      if (inside && !inside(t)) return;
      g.strokeStyle = shade(columns[PARCOORDS.length - 1][i]);
      line(i);
    });
    g.globalAlpha = 1;
    // Axes, their labels and ticks, and the brushed ranges.
    g.font = `12px ${FONT}`;
    g.textAlign = "center";
    for (const [k, d] of PARCOORDS.entries()) {
      const x = xs[k];
      g.strokeStyle = "#1d2633";
      g.lineWidth = 1.2;
      g.beginPath();
      g.moveTo(x, top);
      g.lineTo(x, bottom);
      g.stroke();
      g.fillStyle = "#1d2633";
      g.font = `bold 12px ${FONT}`;
      g.fillText(d.label, x, top - 16);
      g.font = `10px ${FONT}`;
      g.fillStyle = "#5f6b7a";
      g.textAlign = "left";
      for (let j = 0; j <= 4; j++) {
        const v = ranges[k][0] + (j / 4) * (ranges[k][1] - ranges[k][0]);
        const py = y(k, v);
        g.fillRect(x - 3, py, 6, 1);
        g.fillText(fmtNum(v, d.digits), x + 5, py + 3);
      }
      g.textAlign = "center";
      const chosen = (state.brush && state.brush[d.key]) || [];
      const live = pc.drag && pc.drag.axis === k ? [[pc.drag.lo, pc.drag.hi]] : [];
      for (const [lo, hi] of live.length ? live : chosen) {
        g.fillStyle = "rgba(47, 111, 219, 0.22)";
        g.strokeStyle = ACCENT;
        const y0 = y(k, Math.min(hi, ranges[k][1]));
        const y1 = y(k, Math.max(lo, ranges[k][0]));
        g.fillRect(x - 7, y0, 14, y1 - y0);
        g.strokeRect(x - 7, y0, 14, y1 - y0);
      }
    }
    // The colour scale of the metric (its best at the top).
    const barX = width - PC_MARGIN.r + 34;
    for (let py = top; py <= bottom; py++) {
      g.fillStyle = viridis((bottom - py) / (bottom - top));
      g.fillRect(barX, py, 12, 1);
    }
    g.fillStyle = "#5f6b7a";
    g.textAlign = "left";
    const [worst, best] = m.minimize ? [top1[1], top1[0]] : top1;
    const digits = m.unit ? 1 : 3;
    g.fillText(`${fmtNum(best, digits)}${m.unit}`, barX - 4, top - 4);
    g.fillText(`${fmtNum(worst, digits)}${m.unit}`, barX - 4, bottom + 14);
  }

  /** Brushing: press on an axis, drag along it, let go; a click without a drag drops it. */
  function bindParcoords(node) {
    const canvas = $("parcoords-canvas");
    if (!canvas || canvas.dataset.bound) return;
    canvas.dataset.bound = "1";
    const at = (event) => {
      const box = canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    };
    const value = (k, py) => {
      const { top, bottom, ranges } = pc.geometry;
      const u = (bottom - Math.min(bottom, Math.max(top, py))) / (bottom - top);
      return ranges[k][0] + u * (ranges[k][1] - ranges[k][0]);
    };
    canvas.addEventListener("pointerdown", (event) => {
      if (!pc.geometry) return;
      const [px, py] = at(event);
      const k = pc.geometry.xs.findIndex((x) => Math.abs(x - px) <= 12);
      if (k < 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      const v = value(k, py);
      pc.drag = { axis: k, start: py, from: v, lo: v, hi: v, moved: false };
    });
    canvas.addEventListener("pointermove", (event) => {
      const [px, py] = at(event);
      if (!pc.drag) {
        const near = pc.geometry && pc.geometry.xs.some((x) => Math.abs(x - px) <= 12);
        canvas.style.cursor = near ? "ns-resize" : "default";
        return;
      }
      const v = value(pc.drag.axis, py);
      pc.drag.lo = Math.min(pc.drag.from, v);
      pc.drag.hi = Math.max(pc.drag.from, v);
      pc.drag.moved = pc.drag.moved || Math.abs(py - pc.drag.start) > 3;
      if (!pc.frame) pc.frame = requestAnimationFrame(() => { pc.frame = 0; drawParcoords(); });
    });
    const finish = () => {
      if (!pc.drag) return;
      const { axis, lo, hi, moved } = pc.drag;
      pc.drag = null;
      const key = PARCOORDS[axis].key;
      const brush = { ...(state.brush || {}) };
      if (moved) brush[key] = [[lo, hi]];
      else delete brush[key];
      state.brush = Object.keys(brush).length ? brush : null;
      state.tablePage = 0;
      drawParcoords();
      renderBrushNote();
      renderTrials();
    };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", finish);
    window.addEventListener("resize", () => drawParcoords());
  }

  // --- header, polling, stop ----------------------------------------------------------------

  function renderHeader() {
    const s = state.search;
    const badge = $("search-state");
    badge.textContent = s.state;
    badge.className = `badge state-${s.state}`;
    const done = (s.counts && s.counts.completed) || completedTrials().length;
    const total = s.max_trials || 0;
    const bar = $("search-progress");
    bar.style.width = total ? `${Math.min(100, (100 * done) / total)}%` : "0%";
    bar.className = `progress-fill state-${s.state}`;
    const c = s.counts || {};
    const pausedBar = $("search-progress-paused");
    if (pausedBar) pausedBar.style.width = total ? `${Math.min(100, (100 * (c.paused || 0)) / total)}%` : "0%";
    $("search-counts").textContent = `${done} / ${total} trials completed` +
      (c.running ? ` · ${c.running} running` : "") + (c.queued ? ` · ${c.queued} queued` : "") +
      (c.paused ? ` · ${c.paused} paused at a rung` : "") +
      (c.failed ? ` · ${c.failed} failed` : "");
    renderCompute();
    $("surrogate-tag").hidden = !state.trials.some((t) => t.surrogate);
    $("artifact-bytes").textContent = fmtBytes(s.artifact_bytes || 0);
    const stop = $("stop-button");
    if (stop) stop.hidden = !(s.state === "running" || s.state === "paused");
    const resume = $("resume-button");
    if (resume) resume.hidden = !(s.state === "paused" || s.state === "failed");
    const alert = $("search-alert");
    if (s.state === "failed") {
      alert.textContent = "This search failed." + (s.error ? " " + s.error : " The trials table shows what went wrong.");
      alert.hidden = false;
    } else if (s.state === "paused") {
      // Fail fast: the reason says which error repeated and how to go on.
      alert.textContent = "This search is paused. " + (s.error || "");
      alert.hidden = false;
    } else if (alert.dataset.kind !== "error") {
      alert.hidden = true;
    }
  }

  /** Compute spent: epochs trained by all trials (against the budget when there is one). */
  function renderCompute() {
    const s = state.search;
    const epochs = Number(s.epochs_trained || 0);
    const budget = s.max_train_epochs;
    $("compute-epochs").textContent = budget
      ? `${fmtTally(epochs)} / ${fmtTally(budget)} epochs`
      : `${fmtTally(epochs)} epochs`;
    $("compute-macs").textContent = s.train_macs
      ? `${fmtMacs(s.train_macs)}MACs`
      : epochs ? "MACs not reported" : "0 MACs";
    const bar = $("compute-progress");
    if (bar && budget) {
      bar.style.width = `${Math.min(100, (100 * epochs) / budget)}%`;
      bar.parentElement.setAttribute("aria-valuenow", String(epochs));
    }
  }

  /** The rung view (ASHA only): per rung, trials that reached it, went on, wait there. */
  function renderRungs() {
    const table = $("rungs");
    if (!table || !isAsha()) return;
    const rungs = state.search.rungs || [];
    const last = rungs.length - 1;
    const body = el("tbody");
    for (const [k, r] of rungs.entries()) {
      const found = r.best_value ?? r.best_top1;
      const best = found === null || found === undefined ? null : Number(found);
      body.appendChild(el("tr", { "data-epoch": r.epoch }, [
        el("td", { text: k === last ? `${k + 1} (full)` : String(k + 1) }),
        el("td", { class: "num rung-epoch", text: String(r.epoch) }),
        el("td", { class: "num rung-reached", text: String(r.reached) }),
        el("td", { class: "num rung-promoted", text: k === last ? "–" : String(r.promoted) }),
        el("td", { class: "num rung-paused" + (r.paused ? " waiting" : ""), text: String(r.paused) }),
        el("td", { class: "num", text: best === null ? "–" : metric().fmt(best, 2) }),
      ]));
    }
    table.replaceChild(body, table.tBodies[0]);
    const waiting = rungs.reduce((n, r) => n + r.paused, 0);
    const ended = state.search.state !== "running" && state.search.state !== "paused";
    showMessage("rungs-note", ended && waiting
      ? `The search is ${state.search.state}: ${waiting === 1 ? "the trial" : `the ${waiting} trials`} still paused at a rung will not be promoted.`
      : "");
    const labels = rungs.map((r, k) => `rung ${k + 1} · epoch ${r.epoch}`);
    // Stacked: of those that reached a rung, promoted + waiting + the rest (finished at the
    // last rung; stopped or failed before a promotion elsewhere).
    const rest = rungs.map((r, k) => Math.max(0, r.reached - r.paused - (k === last ? 0 : r.promoted)));
    draw("rungs-plot", [
      { type: "bar", orientation: "h", name: "promoted", y: labels, x: rungs.map((r, k) => (k === last ? 0 : r.promoted)),
        marker: { color: ACCENT }, hovertemplate: "%{y}: %{x} promoted<extra></extra>" },
      { type: "bar", orientation: "h", name: "waiting (paused)", y: labels, x: rungs.map((r) => r.paused),
        marker: { color: PAUSED }, hovertemplate: "%{y}: %{x} waiting<extra></extra>" },
      { type: "bar", orientation: "h", name: "finished (all epochs)", y: labels, x: rest.map((n, k) => (k === last ? n : 0)),
        marker: { color: GOOD }, hovertemplate: "%{y}: %{x} finished<extra></extra>" },
      { type: "bar", orientation: "h", name: "went no further", y: labels, x: rest.map((n, k) => (k === last ? 0 : n)),
        marker: { color: "#a9b4c2" }, hovertemplate: "%{y}: %{x} stopped or failed there<extra></extra>" },
    ].filter((trace) => trace.x.some((n) => n > 0)), baseLayout({
      barmode: "stack",
      xaxis: axis("trials that reached the rung", { rangemode: "tozero", dtick: rungs.some((r) => r.reached > 10) ? null : 1 }),
      yaxis: axis("", { autorange: "reversed", automargin: true }),
      legend: { orientation: "h", y: -0.3, yanchor: "top", x: 0 },
      margin: { l: 10, r: 10, t: 8, b: 40 },
    }));
  }

  function setAlert(text) {
    const alert = $("search-alert");
    alert.dataset.kind = text ? "error" : "";
    alert.replaceChildren(document.createTextNode(text || ""));
    alert.hidden = !text;
  }

  /** From well below the search's own budget up to it: the formula is for smaller budgets. */
  function curveRange() {
    const s = state.search;
    const c = s.c || (s.m0 && s.max_macs ? s.max_macs / s.m0 : null);
    if (!c) return "";
    const asked = Number($("formula-c").value) || c;
    const low = Math.min(0.4 * c, asked);
    return `c_min=${low.toFixed(4)}&c_max=${Math.max(c, asked).toFixed(4)}`;
  }

  /** The GP views and the formula curve: asked for after the front and the table are drawn,
   * each drawn when its answer arrives (the server answers from its last stored fit). */
  async function loadAnalysis(id) {
    state.analysisState = "loading";
    const analysisDone = getJSON(`/api/searches/${id}/analysis`).then((analysis) => {
      state.analysis = analysis.ok
        ? analysis.body
        : { fitted: false, error: "The GP views could not be loaded: " + errorText(analysis) };
      state.analysisState = analysis.ok ? "drawn" : "error";
      state.analysisStale = Boolean(analysis.ok && analysis.body.stale);
      drawParts([renderImportance, render1d, render2d]);
      renderAnalysisNote();
    });
    const curveDone = getJSON(`/api/searches/${id}/formula/curve?${curveRange()}`).then((curve) => {
      if (curve.ok) {
        state.curve = curve.body;
        state.curveError = null;
      } else {
        state.curve = null;
        state.curveError = "The downsizing formula is not available yet: " + errorText(curve);
      }
      drawParts([renderFormulaPlot]);
    });
    // Re-ask with whatever was asked last: an answer (or a "too few trials") may change.
    const formulaDone = state.formulaAsked !== null ? runFormula(state.formulaAsked) : null;
    await Promise.all([analysisDone, curveDone, formulaDone]);
  }

  /** While the GP views are on their way (or stale), say so where they will be drawn. */
  function showAnalysisLoading() {
    const text = "Loading the GP views…";
    for (const id of ["gp-empty", "gp2d-empty", "importance-empty"]) {
      const node = $(id);
      if (node && (node.hidden || node.classList.contains("loading"))) {
        showMessage(id, text);
        node.classList.add("loading");
      }
    }
    if (!state.curve && !state.curveError) {
      showMessage("formula-empty", "Loading the downsizing formula…");
      $("formula-empty").classList.add("loading");
    }
    document.body.dataset.analysis = "loading";
  }

  function renderAnalysisNote() {
    for (const id of ["gp-empty", "gp2d-empty", "importance-empty", "formula-empty"]) {
      const node = $(id);
      if (node) node.classList.remove("loading");
    }
    document.body.dataset.analysis = state.analysisState;
    const note = $("analysis-note");
    if (!note) return;
    const a = state.analysis;
    if (!a || !a.fitted_on) {
      note.textContent = "";
      return;
    }
    const sampled = a.modelled_on && a.n && a.modelled_on < a.n
      ? ` (the GPs condition on ${fmtTally(a.modelled_on)} of them: the best quarter and a random rest; ${fmtTally(a.observations_shown)} are drawn as dots)`
      : "";
    const on = `Fitted on ${fmtTally(a.fitted_on.trials)} completed trials${sampled}`;
    note.textContent = a.stale
      ? `${on}; ${fmtTally(a.current_trials)} have completed now — a refit is under way and is drawn when it is stored.`
      : `${on}, the search's completed set as of now.`;
  }

  /** Merge a compact view (all trials, or those changed since the cursor) into state.trials. */
  function mergeTrials(body) {
    const columns = body.columns;
    state.changed = new Set();
    if (body.since === null || body.since === undefined) state.byId = new Map();
    for (const row of body.rows) {
      const t = {};
      for (let i = 0; i < columns.length; i++) t[columns[i]] = row[i];
      t.effective_factors = { r: t.r, d_i: t.d_i, d_m: t.d_m, w: t.w };
      state.byId.set(t.id, t);
      state.changed.add(t.id);
    }
    state.cursor = body.cursor;
    if (body.rows.length || !state.trials.length) {
      state.trials = [...state.byId.values()].sort((a, b) => a.id - b.id);
      state.version = (state.version || 0) + 1;
    }
  }

  async function loadFront(id) {
    const reply = await getJSON(`/api/searches/${id}/pareto`);
    if (!reply.ok) return reply;
    state.front = asList(reply.body);
    state.frontIds = new Set(state.front.map((t) => t.id));
    // The front's members in full (their weights links are drawn in the table).
    for (const t of state.front) {
      const known = state.byId.get(t.id);
      if (known) known.weights_bytes = t.weights_bytes;
    }
    return reply;
  }

  async function refresh(first) {
    const id = encodeURIComponent(state.search.id);
    const since = state.cursor ? `?since=${encodeURIComponent(state.cursor)}` : "";
    const requests = [getJSON(`/api/searches/${id}`), getJSON(`/api/searches/${id}/trials/compact${since}`)];
    if (first) requests.push(loadFront(id)); // the first paint needs the front: ask at once
    const [search, trials, frontReply] = await Promise.all(requests);
    if (first) performance.mark("vitcube:data");
    if (search.status === 401 || trials.status === 401) {
      setAlert("Your session has ended: log in again to keep watching this search.");
      $("refresh-note").replaceChildren(el("a", { href: `/login?next=${encodeURIComponent(location.pathname)}`, text: "Log in" }));
      return;
    }
    if (search.ok) state.search = search.body;
    if (trials.ok) mergeTrials(trials.body);
    const failed = [search, trials, frontReply].find((r) => r && !r.ok);
    if (failed) setAlert("Could not refresh: " + errorText(failed));
    else setAlert("");
    const completed = (state.search.counts && state.search.counts.completed) ?? completedTrials().length;
    const newResults = first || completed !== state.lastCompleted;
    if (newResults && !first) {
      const reply = await loadFront(id);
      if (!reply.ok) setAlert("Could not refresh the Pareto front: " + errorText(reply));
    }
    // First what the page can draw from what it has: the header, the table, then (once
    // Plotly has run) the front.
    drawParts(newResults ? [renderHeader, renderBest, renderParcoords, renderTrials]
      : [renderHeader, renderBest, renderTrials]);
    await state.plotly;
    drawParts([renderPareto, renderRungs]);
    if (first) document.body.dataset.firstPaint = String(Math.round(performance.now()));
    const curvesDone = loadCurves().catch((err) => setAlert("The learning curves could not be drawn: " + err.message));
    if (newResults || state.analysisStale) {
      state.lastCompleted = completed;
      if (first) showAnalysisLoading();
      state.analysisLoad = loadAnalysis(id);
    }
    if (first) await curvesDone;
    // A paused search still has running trials, and an admin may resume it: keep watching.
    const running = state.search.state === "running" || state.search.state === "paused";
    const now = new Date().toLocaleTimeString();
    $("refresh-note").textContent = running
      ? `updated ${now} · refreshing every ${POLL_MS / 1000} s`
      : `search ${state.search.state} · updated ${now}`;
    if (running) state.timer = setTimeout(() => refresh(false), POLL_MS);
    else state.timer = null;
  }

  /** Draw each part on its own: one broken view must not take the others down. Each part's
   * drawing time is a performance measure ("vitcube:renderPareto", …) in the browser's tools. */
  function drawParts(parts) {
    for (const part of parts) {
      try {
        const start = performance.now();
        part();
        performance.measure(`vitcube:${part.name}`, { start, end: performance.now() });
      } catch (err) {
        setAlert(`Part of this page could not be drawn (${part.name}): ${err.message}`);
        if (window.console) console.warn(err);
      }
    }
  }

  async function stopSearch() {
    const button = $("stop-button");
    if (!window.confirm("Stop this search? Queued trials are dropped and running ones are told to stop.")) return;
    button.disabled = true;
    const reply = await getJSON(`/api/searches/${encodeURIComponent(state.search.id)}/stop`, { method: "POST" });
    button.disabled = false;
    if (!reply.ok) {
      setAlert("Could not stop the search: " + errorText(reply));
      return;
    }
    if (state.timer) clearTimeout(state.timer);
    await refresh(false);
  }

  async function resumeSearch() {
    const button = $("resume-button");
    button.disabled = true;
    const reply = await getJSON(`/api/searches/${encodeURIComponent(state.search.id)}/resume`, { method: "POST" });
    button.disabled = false;
    if (!reply.ok) {
      setAlert("Could not resume the search: " + errorText(reply));
      return;
    }
    if (state.timer) clearTimeout(state.timer);
    await refresh(false);
  }

  /** Resolves once Plotly has run (its script comes after this one); without it, the tables
   * still work and the page says why the plots are missing. */
  function plotlyLoaded() {
    return new Promise((resolve) => {
      const fallback = () => {
        if (!window.Plotly) {
          setAlert("The plotting library did not load (/static/plotly.min.js); the tables still work.");
          window.Plotly = { react: () => Promise.resolve(), purge: () => {}, restyle: () => {} };
        }
        resolve();
      };
      const script = $("plotly-js");
      if (window.Plotly || !script) fallback();
      else {
        script.addEventListener("load", fallback);
        script.addEventListener("error", fallback);
      }
    });
  }

  async function initSearchPage() {
    state.search = JSON.parse($("search-data").textContent);
    state.role = JSON.parse($("viewer-data").textContent).role;
    state.plotly = plotlyLoaded();
    $("formula-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const c = Number($("formula-c").value);
      runFormula(c).then(markReady);
    });
    const stop = $("stop-button");
    if (stop) stop.addEventListener("click", stopSearch);
    const resume = $("resume-button");
    if (resume) resume.addEventListener("click", resumeSearch);
    document.addEventListener("click", (event) => {
      const link = event.target.closest("a[href^='#trial-']");
      if (!link) return;
      event.preventDefault();
      showTrial(Number(link.getAttribute("href").slice("#trial-".length)));
    });
    state.formulaAsked = Number($("formula-c").value);
    await refresh(true);
    await state.analysisLoad; // the GP views, the formula curve and the recommendation
    markReady();
  }


  function start() {
    const page = document.body.dataset.page;
    if (page === "searches") initSearchList();
    if (page === "search") {
      initSearchPage().catch((err) => {
        setAlert("This page could not be drawn: " + err.message);
        markReady();
      });
    }
  }

  // A deferred script runs once the document is parsed: start at once (the search page's
  // requests then overlap Plotly's start-up), or on DOMContentLoaded if loaded otherwise.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
