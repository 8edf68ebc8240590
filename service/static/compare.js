/* vitcube compare page: several searches' Pareto fronts, budgets and formula picks on one plot,
 * and the searches page's "compare selected" picker.
 *
 * Same rules as dashboard.js: every URL is a path on this server, fetched with the visitor's
 * same-origin credentials; strings from the API go in with textContent (and are escaped before
 * Plotly's label markup sees them), never as HTML. The fronts are the server's
 * (GET /api/searches/{id}/pareto): nothing here decides which trials are non-dominated.
 */
"use strict";

(function () {
  const { $, el, fmtMacs, fmtNum, metricOf, errorText, getJSON, markReady } = window.vitcube;
  // One colour per search slot (at most 8 searches); colour-blind-safe where it matters most.
  const PALETTE = ["#2f6fdb", "#d1495b", "#1f9d55", "#c77c02", "#8e44ad", "#138d90", "#5f6b7a", "#b0519f"];
  const FACTORS = ["r", "d_i", "d_m", "w"];
  const FACTOR_HOVER = { r: "r", d_i: "d<sub>i</sub>", d_m: "d<sub>m</sub>", w: "w" };
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif';
  const PLOT_CONFIG = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };

  // --- small helpers (the shared ones come from common.js) -----------------------------------







  /** Plotly reads trace names and hover text as a little HTML; a search's name is plain text. */
  function plotText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }


  // --- the compare page ---------------------------------------------------------------------

  const state = {
    searches: [],
    fronts: new Map(), // search id -> {ok, trials} or {ok: false, error}
    formulas: new Map(), // search id -> {ok, body} or {ok: false, status, error}
    askedC: null, // null: every search at its own c
  };

  function ownC(search) {
    if (search.c) return Number(search.c);
    return search.m0 ? search.max_macs / search.m0 : null;
  }

  function colorOf(index) {
    return PALETTE[index % PALETTE.length];
  }

  function label(search) {
    return `#${search.id} ${search.name || "search " + search.id}`;
  }

  function setAlert(text) {
    const alert = $("compare-alert");
    alert.textContent = text || "";
    alert.hidden = !text;
  }

  async function loadFront(search) {
    const reply = await getJSON(`/api/searches/${encodeURIComponent(search.id)}/pareto`);
    state.fronts.set(search.id, reply.ok
      ? { ok: true, trials: (reply.body || []).slice().sort((a, b) => a.macs - b.macs) }
      : { ok: false, error: errorText(reply) });
  }

  async function loadFormula(search) {
    const c = state.askedC === null ? ownC(search) : state.askedC;
    if (!c) {
      state.formulas.set(search.id, { ok: false, status: 0, error: "this search has no c (no m0)" });
      return;
    }
    const reply = await getJSON(
      `/api/searches/${encodeURIComponent(search.id)}/formula?c=${encodeURIComponent(c)}`
    );
    state.formulas.set(search.id, reply.ok
      ? { ok: true, body: reply.body }
      : { ok: false, status: reply.status, error: errorText(reply) });
  }

  /** The best front trial (by the search's metric `m`) at or below `macs`, or null. */
  function bestAtOrBelow(front, macs, m) {
    let best = null;
    for (const t of front) if (t.macs <= macs && (best === null || m.score(t.value) > m.score(best.value))) best = t;
    return best;
  }

  function builtFactors(rec) {
    const scale = rec.scale || {};
    return FACTORS.filter((f) => scale[f] !== undefined || (rec.factors && rec.factors[f]))
      .map((f) => [f, scale[f] !== undefined ? scale[f] : rec.factors[f].mean]);
  }

  function frontTrace(search, index, front) {
    const m = metricOf(search);
    return {
      name: plotText(label(search)),
      meta: { search: search.id, role: "front" },
      legendgroup: `search-${search.id}`,
      x: front.map((t) => t.macs / 1e6),
      y: front.map((t) => m.plot(t.value)),
      customdata: front.map((t) => {
        const f = t.effective_factors || t.factors || {};
        return [t.id, fmtMacs(t.macs), f.r, f.d_i, f.d_m, f.w];
      }),
      mode: "lines+markers",
      type: "scatter",
      line: { color: colorOf(index), width: 2.5 },
      marker: { color: colorOf(index), size: 9, line: { color: "#fff", width: 1 } },
      hovertemplate:
        `<b>%{fullData.name}</b><br>trial %{customdata[0]}: ${m.label} <b>%{y:${m.hover}}${m.unit}</b> at %{customdata[1]}MACs<br>` +
        "r %{customdata[2]:.3f} · d<sub>i</sub> %{customdata[3]:.3f} · d<sub>m</sub> %{customdata[4]:.3f} · " +
        "w %{customdata[5]:.3f}<extra></extra>",
    };
  }

  function formulaTrace(search, index, front, rec) {
    const m = metricOf(search);
    const anchor = bestAtOrBelow(front, rec.macs, m);
    const scores = front.map((t) => m.score(t.value));
    const lowest = front.length ? m.score(Math.min(...scores)) : null; // the worst front value
    if (!anchor && lowest === null) return null; // nothing to stand it on
    const factors = builtFactors(rec).map(([f, v]) => `${FACTOR_HOVER[f]} ${fmtNum(v, 2)}`).join(" · ");
    const where = anchor
      ? `drawn at the best ${m.label} this search found at ≤ these MACs (trial ${anchor.id}, ${m.fmt(anchor.value, 2)})`
      : `no trial of this search is this cheap yet: drawn at its worst front ${m.label}`;
    const text =
      `<b>${plotText(label(search))}</b><br>formula at c=${fmtNum(rec.c, 2)}: ${factors} → ${fmtMacs(rec.macs)}MACs` +
      ` (≤ ${fmtMacs(rec.max_macs)})<br><i>the formula predicts factors, not accuracy;</i><br><i>${where}</i>`;
    return {
      name: plotText(`formula · #${search.id} at c=${fmtNum(rec.c, 2)}`),
      meta: { search: search.id, role: "formula" },
      legendgroup: `search-${search.id}`,
      x: [rec.macs / 1e6],
      y: [m.plot(anchor ? anchor.value : lowest)],
      text: [text],
      mode: "markers",
      type: "scatter",
      marker: {
        color: anchor ? colorOf(index) : "#ffffff",
        symbol: anchor ? "star" : "star-open",
        size: 20,
        line: { color: anchor ? "#1d2633" : colorOf(index), width: anchor ? 1 : 2.5 },
      },
      hovertemplate: "%{text}<extra></extra>",
    };
  }

  function renderPlot() {
    const node = $("compare-plot");
    const traces = [];
    const shapes = [];
    const annotations = [];
    let anyPoint = false;
    state.searches.forEach((search, index) => {
      const front = state.fronts.get(search.id);
      const trials = front && front.ok ? front.trials : [];
      if (trials.length) {
        traces.push(frontTrace(search, index, trials));
        anyPoint = true;
      }
      const formula = state.formulas.get(search.id);
      if (formula && formula.ok) {
        const marker = formulaTrace(search, index, trials, formula.body);
        if (marker) traces.push(marker);
      }
      if (search.max_macs) {
        const x = search.max_macs / 1e6;
        shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
          line: { color: colorOf(index), width: 2, dash: "dash" } });
        annotations.push({ xref: "x", yref: "paper", x, y: 1 - 0.055 * index, yanchor: "top", xanchor: "left",
          text: plotText(`#${search.id} ≤ ${fmtMacs(search.max_macs)}`), showarrow: false, xshift: 3,
          bgcolor: "rgba(255, 255, 255, 0.85)", font: { color: colorOf(index), size: 11 } });
      }
    });
    node.dataset.fronts = String(traces.filter((t) => t.meta.role === "front").length);
    node.dataset.formulas = String(traces.filter((t) => t.meta.role === "formula").length);
    const empty = $("compare-empty");
    empty.textContent = anyPoint ? "" : "None of these searches has a completed trial yet: the fronts appear as trials finish.";
    empty.hidden = anyPoint;
    const surrogate = state.searches.some((s) => {
      const front = state.fronts.get(s.id);
      return front && front.ok && front.trials.some((t) => t.surrogate);
    });
    // One y axis: the searches' metric (named once when they share it, as they usually do).
    const metrics = [...new Map(state.searches.map((s) => [metricOf(s).name, metricOf(s)])).values()];
    const yTitle = metrics.length ? metrics.map((m) => m.axis).join(" · ") : "top-1 accuracy (%)";
    const yReversed = metrics.length === 1 ? metrics[0].yaxis : {};
    return window.Plotly.react(node, traces, {
      font: { family: FONT, size: 12, color: "#1d2633" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hoverlabel: { font: { family: FONT } },
      xaxis: { title: { text: "MACs per image (millions)", standoff: 6 }, gridcolor: "#e8ecf1", zerolinecolor: "#e8ecf1", linecolor: "#c9d1db", automargin: true },
      yaxis: { title: { text: yTitle, standoff: 6 }, gridcolor: "#e8ecf1", zerolinecolor: "#e8ecf1", linecolor: "#c9d1db", automargin: true, ...yReversed },
      shapes,
      annotations: annotations.concat(surrogate ? [{
        xref: "paper", yref: "paper", x: 0, y: 1, xanchor: "left", yanchor: "bottom",
        text: "surrogate results (not trained)", showarrow: false, font: { color: "#6331a3", size: 11 } }] : []),
      legend: { orientation: "h", y: -0.16, yanchor: "top", x: 0 },
      margin: { l: 56, r: 16, t: 28, b: 20 },
    }, PLOT_CONFIG);
  }

  function frontCell(search) {
    const front = state.fronts.get(search.id);
    if (!front) return [el("span", { class: "muted", text: "…" })];
    if (!front.ok) return [el("span", { class: "text-bad", text: "could not load: " + front.error })];
    const n = front.trials.length;
    if (n === 0) return [el("span", { class: "muted", text: "no completed trial yet" })];
    return [el("strong", { text: String(n) }), el("div", { class: "muted small", text: n === 1 ? "trial" : "trials" })];
  }

  function formulaCell(search) {
    const formula = state.formulas.get(search.id);
    if (!formula) return [el("span", { class: "muted", text: "loading…" })];
    if (!formula.ok) {
      // 409: the formula cannot be fitted from this search's completed trials yet.
      if (formula.status === 409) {
        return [
          el("span", { class: "cmp-none", text: "Not enough trials for the formula yet." }),
          el("div", { class: "muted small", text: formula.error }),
        ];
      }
      return [el("span", { class: "text-bad", text: "No recommendation: " + formula.error })];
    }
    const rec = formula.body;
    const over = rec.max_macs && rec.macs > rec.max_macs;
    const stds = FACTORS.filter((f) => rec.factors && rec.factors[f])
      .map((f) => `${f} ${fmtNum(rec.factors[f].mean, 2)} ± ${fmtNum(rec.factors[f].std, 2)}`).join(" · ");
    return [
      el("div", { class: "cmp-factors", text: builtFactors(rec).map(([f, v]) => `${f} ${fmtNum(v, 2)}`).join(" · ") }),
      el("div", {}, [
        "→ ",
        el("strong", { text: `${fmtMacs(rec.macs)}MACs` }),
        ` of ≤ ${fmtMacs(rec.max_macs)} at c = ${fmtNum(rec.c, 2)}`,
        over ? el("span", { class: "text-bad", text: " (over)" }) : null,
      ]),
      el("div", { class: "muted small", title: "the formula's factors (mean ± std) before rounding to a buildable network", text: "formula " + stds }),
    ];
  }

  function renderTable() {
    for (const search of state.searches) {
      const row = $(`compare-row-${search.id}`);
      if (!row) continue;
      row.querySelector("[data-col=front]").replaceChildren(...frontCell(search));
      row.querySelector("[data-col=formula]").replaceChildren(...formulaCell(search));
      const formula = state.formulas.get(search.id);
      row.dataset.formula = formula ? (formula.ok ? "ok" : formula.status === 409 ? "unfitted" : "error") : "";
    }
    const note = $("compare-formula-note");
    note.textContent = state.askedC === null
      ? "The formula column answers for each search's own budget (its c). Ask at one c to see what each search's formula would build for the same share of its baseline."
      : `Every search's formula at c = ${fmtNum(state.askedC, 2)} (a share of each search's own baseline m0); the stars moved with it. The dashed lines stay each search's budget.`;
  }

  function render() {
    renderTable();
    return Promise.resolve(renderPlot()).catch((err) => {
      setAlert("The plot could not be drawn: " + err.message);
    });
  }

  async function askAll() {
    await Promise.all(state.searches.map(loadFormula));
    await render();
    markReady();
  }

  async function initComparePage() {
    state.searches = JSON.parse($("compare-data").textContent);
    state.searches.forEach((search, index) => {
      const color = colorOf(index);
      for (const swatch of document.querySelectorAll(`[data-search-id="${search.id}"] .cmp-swatch`)) {
        swatch.style.background = color;
      }
    });
    if (!window.Plotly) {
      setAlert("The plotting library did not load (/static/plotly.min.js); the table still works.");
      window.Plotly = { react: () => Promise.resolve() };
    }
    $("compare-formula-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const c = Number($("compare-c").value);
      if (!(c > 0)) {
        setAlert("Give c as a positive number (MACs / m0), for example 0.5.");
        return;
      }
      setAlert("");
      state.askedC = c;
      askAll();
    });
    $("compare-own-c").addEventListener("click", () => {
      state.askedC = null;
      $("compare-c").value = "";
      setAlert("");
      askAll();
    });
    await Promise.all(state.searches.flatMap((s) => [loadFront(s), loadFormula(s)]));
    await render();
    markReady();
  }

  // --- the searches page: pick searches to compare ------------------------------------------

  /** Checkboxes live in #searches-card, which dashboard.js re-renders while searches run: the
   * picks are kept here and put back after each re-render. Without JavaScript the form still
   * submits `?ids=3&ids=1`, which /compare accepts too. */
  function initPicker() {
    const form = $("compare-form");
    if (!form) return;
    const picked = new Set();
    const button = $("compare-button");
    const count = $("compare-count");

    function boxes() {
      return Array.from(document.querySelectorAll("input.compare-pick"));
    }

    function update() {
      const ids = boxes().filter((box) => box.checked).map((box) => box.value);
      const max = Number(form.dataset.max || 8);
      button.disabled = ids.length < 2 || ids.length > max;
      count.textContent = ids.length === 0
        ? "tick two or more searches"
        : ids.length > max ? `${ids.length} picked: at most ${max}` : `${ids.length} picked`;
      return ids;
    }

    document.addEventListener("change", (event) => {
      const box = event.target;
      if (!(box instanceof HTMLInputElement) || !box.classList.contains("compare-pick")) return;
      if (box.checked) picked.add(box.value);
      else picked.delete(box.value);
      update();
    });
    const card = $("searches-card");
    if (card) {
      new MutationObserver(() => {
        for (const box of boxes()) box.checked = picked.has(box.value);
        update();
      }).observe(card, { childList: true });
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const ids = update();
      if (ids.length >= 2) window.location.assign("/compare?ids=" + ids.map(encodeURIComponent).join(","));
    });
    for (const box of boxes()) if (box.checked) picked.add(box.value); // kept by a back button
    update();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "searches") initPicker();
    if (page === "compare") {
      initComparePage().catch((err) => {
        setAlert("This page could not be drawn: " + err.message);
        markReady();
      });
    }
  });
})();
